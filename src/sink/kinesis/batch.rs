//! The batcher: records queue per stream, and calls are packed from them (the oldest
//! eligible record of each key not in flight, up to the limits, after `linger`). What a call
//! says is settled record by record: put, refused for good, or sent again after a backoff,
//! in front of the queue, until the record's deadline. Throttling pauses the stream.
//!
//! [`Batches`] is the state and its rules, driven with explicit instants (so the unit tests
//! below need no Kinesis and no clock); [`run`] is the task that feeds it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::call::{call, CallDone, Failure};
use crate::sink::DeliveryError;
use crate::telemetry;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One record waiting to be put, and where its answer goes.
pub(super) struct Item {
    pub(super) stream: String,
    pub(super) key: String,
    pub(super) hash: Option<String>,
    pub(super) data: Bytes,
    pub(super) deadline: Instant,
    pub(super) queued: Instant,
    pub(super) not_before: Instant,
    pub(super) attempts: u32,
    pub(super) last_error: Option<DeliveryError>,
    pub(super) done: oneshot::Sender<Result<(), DeliveryError>>,
}

impl Item {
    fn size(&self) -> usize {
        self.data.len() + self.key.len()
    }
}

#[derive(Clone, Copy)]
pub(super) struct Limits {
    pub(super) linger: Duration,
    pub(super) records: usize,
    pub(super) bytes: usize,
    pub(super) in_flight: usize,
}

/// Packs queued records into calls and answers them. Ends when the sink is dropped and
/// everything queued is answered.
pub(super) async fn run(
    client: aws_sdk_kinesis::Client,
    mut rx: mpsc::Receiver<Item>,
    limits: Limits,
    pending: Arc<AtomicUsize>,
) {
    let mut batches = Batches::new(limits, pending);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CallDone>();
    let mut open = true;
    loop {
        let (calls, wake) = batches.poll(Instant::now());
        for (stream, items) in calls {
            tokio::spawn(call(client.clone(), stream, items, done_tx.clone()));
        }
        if !open && batches.idle() {
            return;
        }
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = rx.recv(), if open => match item {
                Some(item) => {
                    batches.enqueue(item);
                    // Take everything already waiting before packing.
                    while let Ok(item) = rx.try_recv() {
                        batches.enqueue(item);
                    }
                }
                None => open = false,
            },
            Some(done) = done_rx.recv() => batches.settle(done, Instant::now()),
            _ = sleep => {}
        }
    }
}

/// What waits, per stream, and what is in flight.
struct Batches {
    limits: Limits,
    queues: HashMap<String, VecDeque<Item>>,
    /// Per stream, the partition keys with a record in flight.
    in_flight_keys: HashMap<String, HashSet<String>>,
    /// Streams throttled, until when.
    paused: HashMap<String, Instant>,
    /// Calls in flight.
    in_flight: usize,
    /// Records handed over and not answered yet (the sink's `flush` waits for zero).
    pending: Arc<AtomicUsize>,
}

fn answer(pending: &AtomicUsize, item: Item, r: Result<(), DeliveryError>) {
    pending.fetch_sub(1, Ordering::Relaxed);
    let _ = item.done.send(r);
}

impl Batches {
    fn new(limits: Limits, pending: Arc<AtomicUsize>) -> Batches {
        Batches {
            limits,
            queues: HashMap::new(),
            in_flight_keys: HashMap::new(),
            paused: HashMap::new(),
            in_flight: 0,
            pending,
        }
    }

    fn enqueue(&mut self, item: Item) {
        self.queues
            .entry(item.stream.clone())
            .or_default()
            .push_back(item);
    }

    /// Nothing queued and nothing in flight.
    fn idle(&self) -> bool {
        self.in_flight == 0 && self.queues.values().all(VecDeque::is_empty)
    }

    /// Answers the records past their deadline and takes the calls that may go at `now`
    /// (counted in flight until [`settle`](Self::settle)d), with when to look again.
    fn poll(&mut self, now: Instant) -> (Vec<(String, Vec<Item>)>, Option<Instant>) {
        let mut calls = Vec::new();
        let mut wake: Option<Instant> = None;
        let mut soonest = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        for (stream, q) in self.queues.iter_mut() {
            // Records past their deadline are answered now (their client has its answer).
            let mut kept = VecDeque::with_capacity(q.len());
            for item in q.drain(..) {
                if item.deadline <= now {
                    let e = item.last_error.clone().unwrap_or_else(|| {
                        DeliveryError::TimedOut("not put within kinesis.delivery_timeout".into())
                    });
                    answer(&self.pending, item, Err(e));
                } else {
                    kept.push_back(item);
                }
            }
            *q = kept;
            if q.is_empty() {
                continue;
            }
            if let Some(&until) = self.paused.get(stream) {
                if until > now {
                    soonest(until);
                    continue;
                }
            }
            while self.in_flight < self.limits.in_flight {
                let busy = self.in_flight_keys.entry(stream.clone()).or_default();
                let (batch, next) = take_batch(q, busy, self.limits, now);
                if let Some(t) = next {
                    soonest(t);
                }
                if batch.is_empty() {
                    break;
                }
                for item in &batch {
                    busy.insert(item.key.clone());
                }
                self.in_flight += 1;
                calls.push((stream.clone(), batch));
            }
            if let Some(first) = q.iter().map(|i| i.deadline).min() {
                soonest(first);
            }
        }
        self.queues.retain(|_, q| !q.is_empty());
        (calls, wake)
    }

    /// Answers a call's records from what it said: put, refused for good, or (retriable and
    /// before the deadline) back in front of the queue after a backoff. A throttled record
    /// pauses its stream.
    fn settle(&mut self, done: CallDone, now: Instant) {
        self.in_flight -= 1;
        let q = self.queues.entry(done.stream.clone()).or_default();
        let mut retry = Vec::new();
        let mut throttled = false;
        let results: Vec<Option<Failure>> = match done.result {
            Ok(per) => per,
            Err(e) => vec![Some(e); done.items.len()],
        };
        for (item, r) in done.items.into_iter().zip(results) {
            if let Some(busy) = self.in_flight_keys.get_mut(&done.stream) {
                busy.remove(&item.key);
            }
            let Some(f) = r else {
                metrics::counter!(telemetry::KINESIS_RECORDS_PUT).increment(1);
                answer(&self.pending, item, Ok(()));
                continue;
            };
            metrics::counter!(telemetry::KINESIS_RECORDS_FAILED, "code" => f.code.clone())
                .increment(1);
            if f.throttled {
                throttled = true;
                metrics::counter!(telemetry::KINESIS_THROTTLES).increment(1);
            }
            let reason = format!("{}: {}", f.code, f.message);
            if !f.retriable {
                answer(&self.pending, item, Err(DeliveryError::Rejected(reason)));
                continue;
            }
            let mut item = item;
            item.attempts += 1;
            item.last_error = Some(DeliveryError::Failed(reason));
            item.not_before = now + backoff(item.attempts);
            if item.not_before >= item.deadline {
                let e = item.last_error.clone().expect("just set");
                answer(&self.pending, item, Err(e));
            } else {
                metrics::counter!(telemetry::KINESIS_RETRIES).increment(1);
                retry.push(item);
            }
        }
        // Failed records go back in front, in their order: they are older than anything
        // queued behind them.
        for item in retry.into_iter().rev() {
            q.push_front(item);
        }
        if throttled {
            let until = now + backoff(1 + q.front().map_or(0, |i| i.attempts));
            self.paused.insert(done.stream, until);
        }
    }
}

/// The next call's records for one stream: the oldest eligible record of each key not in
/// flight, up to the limits; empty when nothing may go yet. The `Instant` is when to look
/// again (linger or backoff). Records taken leave the queue.
fn take_batch(
    q: &mut VecDeque<Item>,
    in_flight: &HashSet<String>,
    limits: Limits,
    now: Instant,
) -> (Vec<Item>, Option<Instant>) {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut picks = Vec::new();
    let mut bytes = 0;
    let mut oldest: Option<Instant> = None;
    let mut retry_due = false;
    let mut next: Option<Instant> = None;
    for (i, item) in q.iter().enumerate() {
        // The first record of a key blocks the later ones, whether it may go or not.
        if !seen.insert(item.key.as_str()) {
            continue;
        }
        if in_flight.contains(&item.key) {
            continue;
        }
        if item.not_before > now {
            next = Some(next.map_or(item.not_before, |n: Instant| n.min(item.not_before)));
            continue;
        }
        if picks.len() == limits.records || bytes + item.size() > limits.bytes {
            break;
        }
        bytes += item.size();
        picks.push(i);
        retry_due |= item.attempts > 0;
        oldest = Some(oldest.map_or(item.queued, |o: Instant| o.min(item.queued)));
    }
    // Nothing may go yet; `next` still says when a record's backoff ends.
    let Some(oldest) = oldest else {
        return (Vec::new(), next);
    };
    let full = picks.len() == limits.records || bytes * 10 >= limits.bytes * 9;
    let due = oldest + limits.linger;
    if !full && !retry_due && due > now {
        let next = Some(next.map_or(due, |n| n.min(due)));
        return (Vec::new(), next);
    }
    let mut taken = Vec::with_capacity(picks.len());
    let mut rest = VecDeque::with_capacity(q.len() - picks.len());
    let mut picks = picks.into_iter().peekable();
    for (i, item) in q.drain(..).enumerate() {
        if picks.peek() == Some(&i) {
            picks.next();
            taken.push(item);
        } else {
            rest.push_back(item);
        }
    }
    *q = rest;
    (taken, next)
}

pub(super) fn backoff(attempts: u32) -> Duration {
    let base = MIN_BACKOFF
        .saturating_mul(1 << attempts.min(10))
        .min(MAX_BACKOFF);
    // Full jitter between half and all of it, so throttled replicas do not retry in step.
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let frac = 0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0;
    base.mul_f64(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(20);
    const DEADLINE: Duration = Duration::from_secs(10);

    fn limits(records: usize, in_flight: usize) -> Limits {
        Limits {
            linger: LINGER,
            records,
            bytes: 1 << 20,
            in_flight,
        }
    }

    type Answer = oneshot::Receiver<Result<(), DeliveryError>>;

    fn item(stream: &str, key: &str, data: &'static [u8], now: Instant) -> (Item, Answer) {
        let (done, rx) = oneshot::channel();
        let item = Item {
            stream: stream.into(),
            key: key.into(),
            hash: None,
            data: Bytes::from_static(data),
            deadline: now + DEADLINE,
            queued: now,
            not_before: now,
            attempts: 0,
            last_error: None,
            done,
        };
        (item, rx)
    }

    /// Batches holding `records`, as (stream, key, data), all queued at `now`.
    fn batches(
        limits: Limits,
        records: &[(&str, &str, &'static [u8])],
        now: Instant,
    ) -> (Batches, Vec<Answer>) {
        let pending = Arc::new(AtomicUsize::new(records.len()));
        let mut b = Batches::new(limits, pending);
        let answers = records
            .iter()
            .map(|(s, k, d)| {
                let (i, rx) = item(s, k, d, now);
                b.enqueue(i);
                rx
            })
            .collect();
        (b, answers)
    }

    fn keys(call: &(String, Vec<Item>)) -> Vec<&str> {
        call.1.iter().map(|i| i.key.as_str()).collect()
    }

    fn done(call: (String, Vec<Item>), result: Result<Vec<Option<Failure>>, Failure>) -> CallDone {
        CallDone {
            stream: call.0,
            items: call.1,
            result,
        }
    }

    fn all_put(call: (String, Vec<Item>)) -> CallDone {
        let n = call.1.len();
        done(call, Ok(vec![None; n]))
    }

    fn throttled() -> Failure {
        Failure::record("ProvisionedThroughputExceededException", "slow down")
    }

    #[test]
    fn a_partial_batch_waits_for_linger_then_goes() {
        let t0 = Instant::now();
        let (mut b, _answers) = batches(limits(10, 4), &[("s", "a", b"1"), ("s", "b", b"2")], t0);
        let (calls, wake) = b.poll(t0);
        assert!(calls.is_empty(), "nothing goes before linger");
        assert_eq!(wake, Some(t0 + LINGER));
        let (calls, _) = b.poll(t0 + LINGER);
        assert_eq!(calls.len(), 1);
        assert_eq!(keys(&calls[0]), ["a", "b"]);
    }

    #[test]
    fn a_full_batch_goes_at_once_and_the_rest_lingers() {
        let t0 = Instant::now();
        let records = [("s", "a", &b"1"[..]), ("s", "b", b"2"), ("s", "c", b"3")];
        let (mut b, _answers) = batches(limits(2, 4), &records, t0);
        let (calls, wake) = b.poll(t0);
        assert_eq!(calls.len(), 1, "one full call");
        assert_eq!(keys(&calls[0]), ["a", "b"]);
        assert_eq!(wake, Some(t0 + LINGER), "c waits for linger");
    }

    #[test]
    fn a_key_has_one_record_in_flight_and_keeps_its_order() {
        let t0 = Instant::now();
        let records = [
            ("s", "k", &b"first"[..]),
            ("s", "k", b"second"),
            ("s", "j", b"other"),
        ];
        let (mut b, mut answers) = batches(limits(10, 4), &records, t0);
        let (mut calls, _) = b.poll(t0 + LINGER);
        assert_eq!(calls.len(), 1);
        assert_eq!(keys(&calls[0]), ["k", "j"], "the second k record waits");
        assert_eq!(calls[0].1[0].data, Bytes::from_static(b"first"));
        // While k is in flight, its second record does not go, even with calls to spare.
        let (more, _) = b.poll(t0 + LINGER * 10);
        assert!(more.is_empty());
        b.settle(all_put(calls.remove(0)), t0 + LINGER * 10);
        assert!(matches!(answers[0].try_recv(), Ok(Ok(()))));
        assert!(matches!(answers[2].try_recv(), Ok(Ok(()))));
        let (calls, _) = b.poll(t0 + LINGER * 10);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].1[0].data, Bytes::from_static(b"second"));
    }

    #[test]
    fn calls_in_flight_are_capped() {
        let t0 = Instant::now();
        let records = [("s", "a", &b"1"[..]), ("s", "b", b"2"), ("t", "c", b"3")];
        let (mut b, _answers) = batches(limits(1, 2), &records, t0);
        let (calls, _) = b.poll(t0);
        assert_eq!(calls.len(), 2, "two calls at most, whatever the streams");
        let (calls, _) = b.poll(t0);
        assert!(calls.is_empty());
    }

    #[test]
    fn failed_records_go_back_in_front_in_order_after_a_backoff() {
        let t0 = Instant::now();
        let records = [("s", "a", &b"1"[..]), ("s", "b", b"2")];
        let (mut b, mut answers) = batches(limits(10, 4), &records, t0);
        let (mut calls, _) = b.poll(t0 + LINGER);
        let t1 = t0 + LINGER;
        let fail = Failure::record("InternalFailure", "try again");
        b.settle(
            done(calls.remove(0), Ok(vec![Some(fail.clone()), None])),
            t1,
        );
        assert!(
            answers[0].try_recv().is_err(),
            "a is not answered: it is retried"
        );
        assert!(matches!(answers[1].try_recv(), Ok(Ok(()))));
        let (calls, wake) = b.poll(t1);
        assert!(calls.is_empty(), "not before its backoff");
        let wake = wake.expect("a wake-up for the retry");
        assert!(wake > t1 && wake <= t1 + MAX_BACKOFF, "{:?}", wake - t1);
        // A retry does not wait for linger.
        let (calls, _) = b.poll(wake);
        assert_eq!(calls.len(), 1);
        assert_eq!(keys(&calls[0]), ["a"]);
        assert_eq!(calls[0].1[0].attempts, 1);
    }

    #[test]
    fn throttling_pauses_the_stream_but_not_the_others() {
        let t0 = Instant::now();
        let records = [("s", "a", &b"1"[..]), ("t", "b", b"2")];
        let (mut b, _answers) = batches(limits(10, 4), &records, t0);
        let t1 = t0 + LINGER;
        let (calls, _) = b.poll(t1);
        assert_eq!(calls.len(), 2);
        let (s, t): (Vec<_>, Vec<_>) = calls.into_iter().partition(|c| c.0 == "s");
        let s = s.into_iter().next().unwrap();
        b.settle(done(s, Ok(vec![Some(throttled())])), t1);
        let (more, wake) = b.poll(t1);
        assert!(more.is_empty());
        let paused_until = *b.paused.get("s").expect("s is paused");
        assert!(paused_until > t1);
        assert_eq!(wake.map(|w| w <= paused_until), Some(true));
        // t was not throttled: its next record goes as usual.
        b.settle(all_put(t.into_iter().next().unwrap()), t1);
        let (i, _rx) = item("t", "c", b"3", t1);
        b.enqueue(i);
        let (calls, _) = b.poll(t1 + LINGER);
        assert!(calls.iter().any(|c| c.0 == "t"), "t is not paused");
        assert!(calls
            .iter()
            .all(|c| c.0 != "s" || t1 + LINGER >= paused_until));
    }

    #[test]
    fn a_refusal_for_good_is_answered_at_once() {
        let t0 = Instant::now();
        let (mut b, mut answers) = batches(limits(10, 4), &[("s", "a", b"1")], t0);
        let (mut calls, _) = b.poll(t0 + LINGER);
        let gone = Failure {
            code: "ResourceNotFoundException".into(),
            message: "no stream s".into(),
            retriable: false,
            throttled: false,
        };
        b.settle(done(calls.remove(0), Err(gone)), t0 + LINGER);
        match answers[0].try_recv() {
            Ok(Err(DeliveryError::Rejected(m))) => {
                assert_eq!(m, "ResourceNotFoundException: no stream s")
            }
            other => panic!("{other:?}"),
        }
        assert!(b.idle());
        assert_eq!(b.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_record_past_its_deadline_is_answered_with_its_last_error() {
        let t0 = Instant::now();
        let (mut b, mut answers) = batches(limits(10, 4), &[("s", "a", b"1")], t0);
        let (mut calls, _) = b.poll(t0 + LINGER);
        b.settle(
            done(calls.remove(0), Ok(vec![Some(throttled())])),
            t0 + LINGER,
        );
        let (calls, _) = b.poll(t0 + DEADLINE);
        assert!(calls.is_empty());
        match answers[0].try_recv() {
            Ok(Err(DeliveryError::Failed(m))) => {
                assert!(
                    m.starts_with("ProvisionedThroughputExceededException"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(b.idle());
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        for attempts in 1..20 {
            let b = backoff(attempts);
            let base = MIN_BACKOFF
                .saturating_mul(1 << attempts.min(10))
                .min(MAX_BACKOFF);
            assert!(b >= base / 2 && b <= base, "{attempts}: {b:?}");
        }
    }
}
