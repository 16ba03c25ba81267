//! One PutRecords call, and what it says about each of its records.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::batch::Item;
use crate::telemetry;

/// What one PutRecords call says about each of its records.
pub(super) struct CallDone {
    pub(super) stream: String,
    pub(super) items: Vec<Item>,
    /// Per record: `None` put, `Some` failed; `Err` when the whole call failed.
    pub(super) result: Result<Vec<Option<Failure>>, Failure>,
}

/// Why a record (or a whole call) was not put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    /// The Kinesis error code (`ProvisionedThroughputExceededException`, ...), or ours for
    /// failures the SDK does not name (`Timeout`, `DispatchFailure`, `MalformedResponse`).
    pub(super) code: String,
    pub(super) message: String,
    /// Worth sending again (before the record's deadline).
    pub(super) retriable: bool,
    /// The stream is over its throughput: calls to it pause for the backoff.
    pub(super) throttled: bool,
}

impl Failure {
    /// A record the call refused on its own (the call itself succeeded): always retriable,
    /// throttled when the shard was over its throughput.
    pub(super) fn record(code: &str, message: &str) -> Failure {
        Failure {
            throttled: code == "ProvisionedThroughputExceededException",
            code: code.to_string(),
            message: message.to_string(),
            retriable: true,
        }
    }
}

pub(super) async fn call(
    client: aws_sdk_kinesis::Client,
    stream: String,
    items: Vec<Item>,
    done: mpsc::UnboundedSender<CallDone>,
) {
    metrics::histogram!(telemetry::KINESIS_BATCH_RECORDS).record(items.len() as f64);
    let entries: Vec<PutRecordsRequestEntry> = items
        .iter()
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(i.data.to_vec()))
                .partition_key(i.key.clone())
                .set_explicit_hash_key(i.hash.clone())
                .build()
                .expect("data and partition key are set")
        })
        .collect();
    let started = Instant::now();
    let res = client
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries))
        .send()
        .await;
    metrics::histogram!(telemetry::KINESIS_CALL_DURATION).record(started.elapsed().as_secs_f64());
    let result = match res {
        Ok(out) if out.records().len() == items.len() => Ok(out
            .records()
            .iter()
            .map(|r| {
                r.error_code()
                    .map(|c| Failure::record(c, r.error_message().unwrap_or_default()))
            })
            .collect()),
        Ok(out) => Err(Failure {
            code: "MalformedResponse".into(),
            message: format!(
                "{} results for {} records",
                out.records().len(),
                items.len()
            ),
            retriable: true,
            throttled: false,
        }),
        Err(e) => {
            let c = classify(&e);
            tracing::debug!(stream, code = %c.code, message = %c.message, records = items.len(), "PutRecords failed");
            Err(c)
        }
    };
    let _ = done.send(CallDone {
        stream,
        items,
        result,
    });
}

fn classify<E, R>(e: &aws_sdk_kinesis::error::SdkError<E, R>) -> Failure
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error,
{
    use aws_sdk_kinesis::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("Unknown").to_string();
            let throttled = matches!(
                code.as_str(),
                "ProvisionedThroughputExceededException"
                    | "LimitExceededException"
                    | "ThrottlingException"
                    | "KMSThrottlingException"
            );
            // Refused for good: the stream, the request or the credentials are wrong.
            let permanent = matches!(
                code.as_str(),
                "ResourceNotFoundException"
                    | "InvalidArgumentException"
                    | "AccessDeniedException"
                    | "ValidationException"
                    | "KMSAccessDeniedException"
                    | "KMSDisabledException"
                    | "KMSNotFoundException"
                    | "KMSInvalidStateException"
                    | "KMSOptInRequired"
            );
            Failure {
                message: err.message().unwrap_or_default().to_string(),
                code,
                retriable: !permanent,
                throttled,
            }
        }
        other => Failure {
            code: match other {
                SdkError::TimeoutError(_) => "Timeout",
                SdkError::DispatchFailure(_) => "DispatchFailure",
                SdkError::ResponseError(_) => "ResponseError",
                _ => "SdkError",
            }
            .into(),
            message: format!("{other}"),
            retriable: true,
            throttled: false,
        },
    }
}
