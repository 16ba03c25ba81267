//! The real `sluice` binary as a child process, for tests that need signals, -9 or a clean
//! address space (peak RSS).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct Proc {
    pub child: Child,
    pub url: String,
}

impl Proc {
    pub fn spawn(dir: &std::path::Path, env: &[(&str, String)]) -> Proc {
        Self::spawn_logging(dir, env, Stdio::inherit())
    }

    /// With stderr (the logs) sent to `stderr`.
    pub fn spawn_logging(dir: &std::path::Path, env: &[(&str, String)], stderr: Stdio) -> Proc {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("serve")
            .current_dir(dir)
            .env_remove("SLUICE_CONFIG")
            .env("SLUICE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            child: cmd.spawn().unwrap(),
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                !self.exited(),
                "sluice exited before it became ready (its log is above)"
            );
            assert!(Instant::now() < deadline, "sluice did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the child has exited (a zombie not yet reaped), without taking `&mut self`.
    fn exited(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .map(|stat| {
                // pid (comm) state ...: the state follows the last ')'.
                stat.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    == Some("Z")
            })
            .unwrap_or(true)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// SIGKILL: no drain, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The /metrics text.
    pub async fn metrics(&self, client: &reqwest::Client) -> String {
        client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// GETs /readyz and returns its JSON.
    pub async fn readyz(&self, client: &reqwest::Client) -> serde_json::Value {
        client
            .get(format!("{}/readyz", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the spool has replayed everything.
    pub async fn wait_spool_drained(&self, client: &reqwest::Client, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let r = self.readyz(client).await;
            if r["checks"]["spool"]["backlog_bytes"] == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "spool not drained: {r}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
