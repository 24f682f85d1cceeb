//! A PostgreSQL server of a test's own: Debian's `postgresql` (which `.ci/run` installs),
//! in a temporary folder, on a free port, stopped and deleted when the test ends. Used by
//! the store's own tests (runtime/src/state/postgres/tests.rs includes this file) and by
//! the actor checker's partition runs.

// Each includer uses a part.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A PostgreSQL server of this test's own.
pub struct Server {
    dir: PathBuf,
    bin: PathBuf,
    pub url: String,
    /// As root, the server runs as the `postgres` user (it refuses to run as root).
    as_postgres: bool,
}

impl Server {
    /// A server on a free port of 127.0.0.1 that only this machine may use.
    pub fn start() -> Result<Server, String> {
        Self::start_on("127.0.0.1", None)
    }

    /// A server listening on `addr` (an address of this machine); clients from `network`
    /// (say `10.1.2.0/24`) may connect too, without a password.
    pub fn start_on(addr: &str, network: Option<&str>) -> Result<Server, String> {
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
        if let Some(network) = network {
            let hba = data.join("pg_hba.conf");
            let mut rules =
                std::fs::read_to_string(&hba).map_err(|e| format!("pg_hba.conf: {e}"))?;
            rules.push_str(&format!("host all all {network} trust\n"));
            std::fs::write(&hba, rules).map_err(|e| format!("pg_hba.conf: {e}"))?;
        }
        let port = std::net::TcpListener::bind((addr, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        // fsync off: these tests are about what the store does, not about the disk.
        let options = format!(
            "-p {port} -k {} -c listen_addresses={addr} -c fsync=off",
            server.dir.display()
        );
        run(server
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(server.dir.join("log"))
            .args(["-w", "-t", "30", "start"]))?;
        server.url = format!("postgres://meshrpc@{addr}:{port}/postgres");
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
pub fn server(test: &str) -> Option<Server> {
    match Server::start() {
        Ok(server) => Some(server),
        Err(why) => {
            eprintln!("skipping {test}: cannot start PostgreSQL: {why}");
            None
        }
    }
}
