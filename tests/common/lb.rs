//! HAProxy from Debian in front of Huddle nodes, started the way the README deploys it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// HAProxy in front of the nodes: round robin, health-checked every 250 ms, SSE unbuffered, a
/// request whose connection is refused tried at another node; to each node it speaks HTTP/2, so
/// its clients' streams share a few connections there.
pub struct Lb {
    pub base: String,
    child: std::process::Child,
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Lb {
    pub async fn start(port: u16, nodes: &[u16], dir: &std::path::Path) -> Self {
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!("  server n{i} 127.0.0.1:{p} proto h2 check inter 250ms fall 2 rise 1\n")
            })
            .collect();
        let config = format!(
            "global\n  maxconn 4000\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n  timeout tunnel 1h\n\
             \x20 option redispatch\n  retries 3\n  retry-on conn-failure\n  option forwardfor\n\
             frontend huddle\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n  http-reuse always\n  option httpchk\n  http-check send meth GET uri /healthz\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(haproxy_bin());
        // At the usual priority, whatever the load generator that starts it runs at.
        unsafe { cmd.pre_exec(super::normal_priority) };
        let child = cmd
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy (scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "haproxy did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            base: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}

fn haproxy_bin() -> PathBuf {
    std::env::var_os("HAPROXY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/haproxy"))
}
