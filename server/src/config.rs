//! What `weft serve` is told on its command line, checked before it binds.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use weft_core::Previews;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Required of every request when set (`--token`).
    pub token: Option<String>,
    /// `--insecure`: serve a non-loopback address without a token.
    pub insecure: bool,
    /// A `comfyui-frontend-package` static folder to serve at `/`.
    pub frontend: Option<PathBuf>,
    pub dirs: Dirs,
    pub limits: Limits,
    /// Memory for loaded models and cached results (`--max-ram`).
    pub max_ram_bytes: usize,
    /// Worker threads for independent nodes; `None` uses every core.
    pub workers: Option<usize>,
    pub previews: Previews,
}

/// ComfyUI's folders: `output/`, `input/`, `temp/` and `user/`.
#[derive(Clone, Debug)]
pub struct Dirs {
    pub output: PathBuf,
    pub input: PathBuf,
    pub temp: PathBuf,
    pub user: PathBuf,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest JSON body (a prompt, settings, a user file).
    pub json_bytes: usize,
    /// Largest upload.
    pub upload_bytes: usize,
    /// History entries kept (ComfyUI keeps 10,000).
    pub history: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            json_bytes: 32 << 20,
            upload_bytes: 100 << 20,
            history: 10_000,
        }
    }
}

impl ServerConfig {
    /// Refuses to expose an unauthenticated server: a non-loopback address
    /// needs a token or an explicit `--insecure`.
    pub fn check(&self) -> Result<(), String> {
        if let Some(token) = &self.token {
            if token.len() < 8 || token.chars().any(|c| c.is_whitespace() || c == ';') {
                return Err("--token must be at least 8 characters, without spaces or `;`".into());
            }
        }
        if !is_loopback(self.addr.ip()) && self.token.is_none() && !self.insecure {
            return Err(format!(
                "refusing to listen on {} without authentication: pass --token TOKEN (clients send `Authorization: Bearer TOKEN`), or --insecure to expose it anyway",
                self.addr.ip()
            ));
        }
        Ok(())
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(addr: &str, token: Option<&str>, insecure: bool) -> ServerConfig {
        ServerConfig {
            addr: addr.parse().unwrap(),
            token: token.map(str::to_string),
            insecure,
            frontend: None,
            dirs: Dirs {
                output: "o".into(),
                input: "i".into(),
                temp: "t".into(),
                user: "u".into(),
            },
            limits: Limits::default(),
            max_ram_bytes: 1 << 30,
            workers: None,
            previews: Previews::default(),
        }
    }

    #[test]
    fn exposing_needs_a_token_or_insecure() {
        assert!(config("127.0.0.1:8188", None, false).check().is_ok());
        assert!(config("[::1]:8188", None, false).check().is_ok());
        let err = config("0.0.0.0:8188", None, false).check().unwrap_err();
        assert!(err.contains("--token"), "{err}");
        assert!(config("0.0.0.0:8188", Some("s3cret-token"), false)
            .check()
            .is_ok());
        assert!(config("0.0.0.0:8188", None, true).check().is_ok());
        assert!(config("0.0.0.0:8188", Some("short"), false)
            .check()
            .is_err());
    }
}
