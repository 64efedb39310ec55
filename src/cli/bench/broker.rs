//! The embedded broker of `herald bench --embedded`: librdkafka's MockCluster in a child
//! process of its own (this binary again, `herald bench --serve-mock-broker`), so that the
//! benchmark's CPU and memory figures are Herald's and not the broker's, which keeps every
//! record it is sent in memory.
//!
//! The two talk over the child's stdin and stdout, one line each way: the child first prints
//! its bootstrap servers, then answers `topic NAME PARTITIONS` with `ok` or `error: …`. It
//! stops when its stdin closes, so it never outlives the benchmark.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, anyhow, bail};
use rdkafka::mocking::MockCluster;

/// The mock broker running in a child process.
pub struct EmbeddedBroker {
    child: Child,
    pipes: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    bootstrap: String,
}

impl EmbeddedBroker {
    /// Starts the child and waits for its bootstrap servers.
    pub fn start() -> anyhow::Result<Self> {
        let exe =
            std::env::current_exe().context("cannot find this program to start the broker")?;
        let mut child = Command::new(exe)
            .args(["bench", "--serve-mock-broker"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the embedded broker process")?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let bootstrap = read_line(&mut stdout)?;
        if let Some(e) = bootstrap.strip_prefix("error: ") {
            bail!("the embedded broker did not start: {e}");
        }
        Ok(Self {
            child,
            pipes: Mutex::new((stdin, stdout)),
            bootstrap,
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates `name` with `partitions` partitions (replication 1).
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        let (stdin, stdout) = &mut *pipes;
        writeln!(stdin, "topic {name} {partitions}")
            .and_then(|()| stdin.flush())
            .context("the embedded broker process is gone")?;
        match read_line(stdout)?.as_str() {
            "ok" => Ok(()),
            answer => Err(anyhow!(
                "cannot create {name} on the embedded broker: {}",
                answer.strip_prefix("error: ").unwrap_or(answer)
            )),
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_line(from: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    if from
        .read_line(&mut line)
        .context("cannot read from the embedded broker process")?
        == 0
    {
        bail!("the embedded broker process stopped");
    }
    Ok(line.trim_end().to_owned())
}

/// The child's side: runs a one-broker MockCluster until stdin closes, creating topics on
/// request.
pub fn serve() -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let cluster = match MockCluster::new(1) {
        Ok(c) => c,
        Err(e) => {
            writeln!(stdout, "error: {e}")?;
            return Ok(());
        }
    };
    writeln!(stdout, "{}", cluster.bootstrap_servers())?;
    stdout.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let answer = match line.split(' ').collect::<Vec<_>>()[..] {
            ["topic", name, partitions] => match partitions.parse() {
                Ok(partitions) => match cluster.create_topic(name, partitions, 1) {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("error: {e}"),
                },
                Err(_) => format!("error: partitions {partitions:?} is not a number"),
            },
            _ => format!("error: unknown request {line:?}"),
        };
        writeln!(stdout, "{answer}")?;
        stdout.flush()?;
    }
    Ok(())
}
