//! The server to load, from `--url`. Only a loopback address is accepted: a load generator pointed
//! elsewhere is an attack on someone else's server, so the check is made here, once, before any
//! connection is opened, and a host name must resolve to loopback addresses only.

use std::net::{IpAddr, SocketAddr};

use hyper::Uri;

use super::BenchError;

/// A resolved, loopback-only target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The address connections are opened to.
    pub addr: SocketAddr,
    /// The `Host` header (`host:port` as written in the URL).
    pub authority: String,
    /// A path prefix before `/cds-services` (empty for a server at the root).
    pub base_path: String,
}

impl Target {
    /// Parses `url` (`http://HOST[:PORT][/prefix]`) and resolves its host; refuses anything that is
    /// not loopback.
    pub async fn resolve(url: &str) -> Result<Self, BenchError> {
        let invalid = |reason: &str| BenchError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| invalid("expected http://HOST:PORT"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported: the generator runs next to the server, over loopback",
                ));
            }
            _ => return Err(invalid("expected http://HOST:PORT")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("no host"))?
            .as_str()
            .to_owned();
        if authority.contains('@') {
            return Err(invalid("user information is not supported"));
        }
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = match bare.parse::<IpAddr>() {
            Ok(ip) => {
                if !is_loopback(ip) {
                    return Err(BenchError::NotLoopback {
                        url: url.to_owned(),
                        host: host.to_owned(),
                    });
                }
                SocketAddr::new(ip, port)
            }
            Err(_) => resolve_host(url, bare, port).await?,
        };
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            url: url.to_owned(),
            addr,
            authority,
            base_path,
        })
    }

    /// The path of a service's call endpoint.
    pub fn service_path(&self, service: &str) -> String {
        format!("{}/cds-services/{service}", self.base_path)
    }

    /// `http://ADDR` for the gRPC channel (the resolved address, so nothing is resolved again).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// 127.0.0.0/8, ::1, and IPv4-mapped loopback.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Resolves a host name; every address must be loopback (an IPv4 one is preferred, as the server
/// listens on 127.0.0.1 by default).
async fn resolve_host(url: &str, host: &str, port: u16) -> Result<SocketAddr, BenchError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| BenchError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !is_loopback(a.ip())) {
        let found: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        return Err(BenchError::NotLoopback {
            url: url.to_owned(),
            host: format!("{host} (resolves to {})", found.join(", ")),
        });
    }
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| BenchError::Url {
            url: url.to_owned(),
            reason: "the host resolves to no address".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(url: &str) -> Result<Target, BenchError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::Runtime)?;
        runtime.block_on(Target::resolve(url))
    }

    #[test]
    fn loopback_addresses_are_accepted() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3:9000/",
            "http://[::1]:8080",
            "http://localhost:8080",
        ] {
            let target = resolve(url);
            assert!(target.is_ok(), "{url}: {target:?}");
        }
        let target = resolve("http://127.0.0.1:8080/prefix/").ok();
        assert_eq!(
            target.map(|t| t.service_path("x")),
            Some("/prefix/cds-services/x".to_owned())
        );
    }

    #[test]
    fn other_addresses_are_refused() {
        for url in [
            "http://10.1.2.3:8080",
            "http://192.168.0.1",
            "http://8.8.8.8:80",
            "http://[2001:db8::1]:8080",
            "http://0.0.0.0:8080",
        ] {
            let refused = resolve(url);
            assert!(
                matches!(refused, Err(BenchError::NotLoopback { .. })),
                "{url}: {refused:?}"
            );
        }
        assert!(matches!(
            resolve("https://127.0.0.1:8443"),
            Err(BenchError::Url { .. })
        ));
        assert!(matches!(
            resolve("127.0.0.1:8080"),
            Err(BenchError::Url { .. })
        ));
    }
}
