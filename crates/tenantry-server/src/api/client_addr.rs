//! The client's address for per-address limits (login lockout, OTP sends).
//!
//! Behind a proxy the TCP peer is the proxy, so every client would share one
//! budget; but a forwarding header is only as honest as whoever sent it. The
//! hops are read right to left — the peer, then each address the proxies
//! appended — and the first hop that is not a trusted proxy is the client.
//! A client can prepend anything it likes; it cannot get past the proxies.

use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use std::net::{IpAddr, SocketAddr};

/// The client's address: the TCP peer, or the nearest untrusted hop a
/// trusted proxy forwarded.
pub struct ClientAddr(pub Option<String>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddr(peer.map(|peer| {
            client_ip(peer, &parts.headers, &state.settings.trusted_proxies).to_string()
        })))
    }
}

/// The nearest hop, walking from `peer` back through the forwarded chain
/// (`Forwarded` if present, else `X-Forwarded-For`), that is not one of
/// `trusted`. A hop that does not parse (`unknown`, an obfuscated name)
/// stops the walk at the trusted proxy that reported it.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<Option<IpAddr>> = if headers.contains_key("forwarded") {
        values(headers, "forwarded")
            .flat_map(|v| v.split(',').map(forwarded_for).collect::<Vec<_>>())
            .collect()
    } else {
        values(headers, "x-forwarded-for")
            .flat_map(|v| {
                v.split(',')
                    .map(|hop| parse_hop(hop.trim()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut client = peer;
    for hop in forwarded.into_iter().rev() {
        match hop {
            Some(ip) => {
                client = ip;
                if !trusted.contains(&ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
}

/// The `for=` parameter of one RFC 7239 element.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_hop(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("value"));
        }
        h
    }

    const PROXY: &str = "10.0.0.1";

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &[ip(PROXY)]),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_prepended_values_do_not_count() {
        let trusted = [ip(PROXY), ip("10.0.0.2")];
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(client_ip(ip(PROXY), &h, &trusted), ip("198.51.100.7"));
        // Repeated headers are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client_ip(ip(PROXY), &h, &trusted), ip("198.51.100.7"));
        // No header: the proxy itself.
        assert_eq!(client_ip(ip(PROXY), &HeaderMap::new(), &trusted), ip(PROXY));
    }

    #[test]
    fn forwarded_is_preferred_and_parsed_with_ports_quotes_and_ipv6() {
        let trusted = [ip(PROXY)];
        let h = headers(&[
            (
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            ),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client_ip(ip(PROXY), &h, &trusted), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "proto=http;For=192.0.2.60:80;by=10.0.0.1")]);
        assert_eq!(client_ip(ip(PROXY), &h, &trusted), ip("192.0.2.60"));
    }

    #[test]
    fn an_unreadable_hop_stops_at_the_proxy_that_reported_it() {
        let trusted = [ip(PROXY), ip("10.0.0.2")];
        let h = headers(&[("x-forwarded-for", "198.51.100.7, unknown, 10.0.0.2")]);
        assert_eq!(client_ip(ip(PROXY), &h, &trusted), ip("10.0.0.2"));
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(client_ip(ip(PROXY), &h, &trusted), ip(PROXY));
    }
}
