//! What the broker tests share: a real broker, the one at
//! `FERROBEAM_TEST_KAFKA=host:port`, or else one started with
//! `scripts/kafka/kafka.sh` (and stopped when dropped).

/// A broker started for this test, stopped when dropped.
pub struct Broker {
    pub addr: String,
    dir: Option<tempfile::TempDir>,
}

fn kafka_sh() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka/kafka.sh")
}

impl Broker {
    pub fn start() -> Self {
        if let Ok(addr) = std::env::var("FERROBEAM_TEST_KAFKA") {
            return Self { addr, dir: None };
        }
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("bash")
            .arg(kafka_sh())
            .args(["start", "--dir"])
            .arg(dir.path())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "kafka.sh start failed");
        Self {
            addr: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            dir: Some(dir),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::process::Command::new("bash")
                .arg(kafka_sh())
                .args(["stop", "--dir"])
                .arg(dir.path())
                .status();
        }
    }
}
