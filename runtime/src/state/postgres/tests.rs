//! The PostgreSQL store against a real server this test starts: Debian's `postgresql`
//! (which `.ci/run` installs), in a temporary folder, on a free loopback port, stopped and
//! deleted when the test ends. Without the server's programs the tests skip, saying so.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::super::spec;
use super::super::StateStore;
use super::*;

/// A PostgreSQL server of this test's own.
struct Server {
    dir: PathBuf,
    bin: PathBuf,
    url: String,
    /// As root, the server runs as the `postgres` user (it refuses to run as root).
    as_postgres: bool,
}

impl Server {
    fn start() -> Result<Server, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bin = programs().ok_or("no PostgreSQL server programs (initdb, pg_ctl) here")?;
        let dir = std::env::temp_dir().join(format!(
            "meshrpc-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let as_postgres = is_root();
        let mut server = Server {
            dir,
            bin,
            url: String::new(),
            as_postgres,
        };
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(&server.dir))?;
        }
        let data = server.dir.join("data");
        run(server.command("initdb").arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "meshrpc",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        // fsync off: these tests are about what the store does, not about the disk.
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            server.dir.display()
        );
        run(server
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(server.dir.join("log"))
            .args(["-w", "-t", "30", "start"]))?;
        server.url = format!("postgres://meshrpc@127.0.0.1:{port}/postgres");
        Ok(server)
    }

    /// One of the server's programs, as the user the server runs as.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The folder holding `initdb` and `pg_ctl`: on the `PATH`, or Debian's versioned folder.
fn programs() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A server, or `None` after saying why these tests skip.
fn server(test: &str) -> Option<Server> {
    match Server::start() {
        Ok(server) => Some(server),
        Err(why) => {
            eprintln!("skipping {test}: cannot start PostgreSQL: {why}");
            None
        }
    }
}

#[tokio::test]
async fn writes_are_compare_and_set_on_a_real_server() {
    let Some(server) = server("writes_are_compare_and_set_on_a_real_server") else {
        return;
    };
    let store = open(&server.url).await.expect("connects");
    assert_eq!(store.describe(), server.url);
    spec::compare_and_set(&store).await;
    // Two connections, as two nodes on two hosts would hold.
    let other = open(&server.url).await.expect("a second connection");
    spec::shared(&store, &other).await;
    drop(server);
}

#[tokio::test]
async fn a_server_that_went_away_is_unavailable_and_nothing_hangs() {
    let Some(server) = server("a_server_that_went_away_is_unavailable_and_nothing_hangs") else {
        return;
    };
    let store = open(&server.url).await.expect("connects");
    assert_eq!(
        store.write(vec![spec::put("c", "k", "v", 0)]).await,
        [Ok(1)]
    );
    drop(server); // stopped, its folder gone
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), store.read("c", "k"))
        .await
        .expect("an answer, not a hang");
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
}

#[test]
fn a_password_is_not_shown() {
    assert_eq!(
        without_password("postgres://app:s3cret@db:5432/state"),
        "postgres://app:…@db:5432/state"
    );
    assert_eq!(
        without_password("postgres://app@db/state"),
        "postgres://app@db/state"
    );
}

#[tokio::test]
async fn a_key_no_row_can_hold_is_refused_alone() {
    let Some(server) = server("a_key_no_row_can_hold_is_refused_alone") else {
        return;
    };
    let store = open(&server.url).await.expect("connects");
    let long = "k".repeat(5000);
    for bad in ["nul\0key", long.as_str()] {
        let refused = store.write(vec![spec::put("c", bad, "v", 0)]).await;
        assert!(
            matches!(refused[..], [Err(StoreError::Unavailable(_))]),
            "{refused:?}"
        );
        assert!(store.read("c", bad).await.is_err());
    }
    // The store goes on for everyone else.
    assert_eq!(
        store.write(vec![spec::put("c", "fine", "v", 0)]).await,
        [Ok(1)]
    );
    drop(server);
}
