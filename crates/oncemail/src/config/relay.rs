//! The `[relay]` and `[queue]` sections: who may relay, where mail goes, how patiently.
//!
//! Defaults follow what mail administrators expect from other MTAs: relaying for the
//! loopback networks only (I7), RFC 5321 §4.5.3.2 timeouts with 10 minutes for the reply
//! to the final dot (I5), five days in the queue before a message bounces.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRelay {
    /// Client networks that may relay without authenticating.
    trusted_networks: Vec<String>,
    /// Static routes: recipient domain (or "*") to "host", "host:port" or "[ip]:port".
    routes: BTreeMap<String, String>,
    /// Port of the hosts found by MX lookup.
    port: u16,
    /// Opportunistic STARTTLS when the next hop offers it.
    starttls: bool,
    /// Remote deliveries at once, all destinations together.
    concurrency: usize,
    /// Remote deliveries at once to one destination.
    per_destination: usize,
    #[serde(with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    greeting_timeout: Duration,
    #[serde(with = "humantime_serde")]
    mail_timeout: Duration,
    #[serde(with = "humantime_serde")]
    rcpt_timeout: Duration,
    #[serde(with = "humantime_serde")]
    data_init_timeout: Duration,
    #[serde(with = "humantime_serde")]
    data_block_timeout: Duration,
    #[serde(with = "humantime_serde")]
    data_term_timeout: Duration,
}

impl Default for RawRelay {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        RawRelay {
            trusted_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            routes: BTreeMap::new(),
            port: 25,
            starttls: true,
            concurrency: 20,
            per_destination: 4,
            connect_timeout: Duration::from_secs(30),
            greeting_timeout: minutes(5),
            mail_timeout: minutes(5),
            rcpt_timeout: minutes(5),
            data_init_timeout: minutes(2),
            data_block_timeout: minutes(3),
            data_term_timeout: minutes(10),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawQueue {
    /// How long a message may wait for delivery before it bounces.
    #[serde(with = "humantime_serde")]
    max_lifetime: Duration,
    /// Delays between attempts ("1m", "2h"); the last one repeats.
    retry_delays: Vec<String>,
    /// A message with more `Received:` fields than this is a loop (refused with 5.4.6).
    max_hops: usize,
}

impl Default for RawQueue {
    fn default() -> Self {
        RawQueue {
            max_lifetime: Duration::from_secs(5 * 86_400),
            retry_delays: ["1m", "5m", "15m", "30m", "1h", "2h"].map(String::from).to_vec(),
            max_hops: 50,
        }
    }
}

/// Where a static route sends mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct Relay {
    pub trusted_networks: Vec<IpNet>,
    /// Lowercased domain to target; `"*"` is the smart host.
    pub routes: BTreeMap<String, Target>,
    pub port: u16,
    pub starttls: bool,
    pub concurrency: usize,
    pub per_destination: usize,
    pub timeouts: Timeouts,
}

/// RFC 5321 §4.5.3.2 client timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data_init: Duration,
    pub data_block: Duration,
    pub data_term: Duration,
}

#[derive(Debug, Clone)]
pub struct QueuePolicy {
    pub max_lifetime: Duration,
    pub retry_delays: Vec<Duration>,
    pub max_hops: usize,
}

impl Relay {
    /// The static route for `domain` (lowercased), falling back to the smart host.
    pub fn route_for(&self, domain: &str) -> Option<&Target> {
        self.routes.get(domain).or_else(|| self.routes.get("*"))
    }

    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.trusted_networks.iter().any(|net| net.contains(&ip))
    }
}

pub(super) fn validate_relay(raw: RawRelay) -> anyhow::Result<Relay> {
    let mut trusted_networks = Vec::new();
    for text in &raw.trusted_networks {
        let net = parse_network(text).with_context(|| {
            format!("relay.trusted_networks: {text:?} is not an address or network")
        })?;
        trusted_networks.push(net);
    }

    let mut routes = BTreeMap::new();
    for (domain, target) in &raw.routes {
        let target = parse_target(target, raw.port)
            .with_context(|| format!("relay.routes: {domain:?} = {target:?} is not host[:port]"))?;
        routes.insert(domain.trim_end_matches('.').to_lowercase(), target);
    }

    if raw.concurrency < 1 || raw.per_destination < 1 {
        bail!("relay.concurrency, relay.per_destination: must be at least 1");
    }
    let timeouts = Timeouts {
        connect: raw.connect_timeout,
        greeting: raw.greeting_timeout,
        mail: raw.mail_timeout,
        rcpt: raw.rcpt_timeout,
        data_init: raw.data_init_timeout,
        data_block: raw.data_block_timeout,
        data_term: raw.data_term_timeout,
    };
    let all = [
        timeouts.connect,
        timeouts.greeting,
        timeouts.mail,
        timeouts.rcpt,
        timeouts.data_init,
        timeouts.data_block,
        timeouts.data_term,
    ];
    if all.iter().any(|t| t.is_zero()) {
        bail!("relay.*_timeout: must be more than zero");
    }

    let (port, starttls) = (raw.port, raw.starttls);
    let (concurrency, per_destination) = (raw.concurrency, raw.per_destination);
    Ok(Relay { trusted_networks, routes, port, starttls, concurrency, per_destination, timeouts })
}

pub(super) fn validate_queue(raw: RawQueue) -> anyhow::Result<QueuePolicy> {
    let mut retry_delays = Vec::new();
    for text in &raw.retry_delays {
        let delay = humantime::parse_duration(text)
            .with_context(|| format!("queue.retry_delays: {text:?} is not a duration"))?;
        retry_delays.push(delay);
    }
    if retry_delays.is_empty() || retry_delays.iter().any(|d| d.is_zero()) {
        bail!("queue.retry_delays: needs at least one delay, each more than zero");
    }
    if raw.max_lifetime.is_zero() {
        bail!("queue.max_lifetime: must be more than zero");
    }
    if raw.max_hops < 1 {
        bail!("queue.max_hops: must be at least 1");
    }
    Ok(QueuePolicy { max_lifetime: raw.max_lifetime, retry_delays, max_hops: raw.max_hops })
}

/// "10.0.0.0/8", "::1/128", or a single address.
fn parse_network(text: &str) -> anyhow::Result<IpNet> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    let ip: std::net::IpAddr = text.parse()?;
    Ok(IpNet::from(ip))
}

/// "host", "host:port", "[ip]" or "[ip]:port"; the port defaults to `default_port`.
fn parse_target(text: &str, default_port: u16) -> anyhow::Result<Target> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').context("unclosed [")?;
        let port = after.strip_prefix(':').map(str::parse).transpose()?;
        (ip.to_string(), port)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host.to_string(), Some(port.parse()?)),
            _ => (text.to_string(), None),
        }
    };
    if host.is_empty() {
        bail!("empty host");
    }
    Ok(Target { host: host.to_lowercase(), port: port.unwrap_or(default_port) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_ports() {
        let t = |host: &str, port| Target { host: host.into(), port };
        assert_eq!(parse_target("mx.example.net", 25).unwrap(), t("mx.example.net", 25));
        assert_eq!(parse_target("127.0.0.1:2526", 25).unwrap(), t("127.0.0.1", 2526));
        assert_eq!(parse_target("[::1]:2526", 25).unwrap(), t("::1", 2526));
        assert_eq!(parse_target("[192.0.2.1]", 25).unwrap(), t("192.0.2.1", 25));
        assert!(parse_target("host:port", 25).is_err());
        assert!(parse_target("[::1", 25).is_err());
    }

    #[test]
    fn trusted_networks_match_mapped_addresses() {
        let mut raw = RawRelay::default();
        raw.trusted_networks.push("192.0.2.7".into());
        let relay = validate_relay(raw).unwrap();
        assert!(relay.trusts("127.1.2.3".parse().unwrap()));
        assert!(relay.trusts("::1".parse().unwrap()));
        assert!(relay.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(relay.trusts("192.0.2.7".parse().unwrap()));
        assert!(!relay.trusts("192.0.2.8".parse().unwrap()));
    }

    #[test]
    fn routes_fall_back_to_the_smart_host() {
        let mut raw = RawRelay::default();
        raw.routes.insert("Example.NET".into(), "127.0.0.1:2526".into());
        raw.routes.insert("*".into(), "smarthost.test".into());
        let relay = validate_relay(raw).unwrap();
        assert_eq!(relay.route_for("example.net").unwrap().port, 2526);
        assert_eq!(relay.route_for("other.org").unwrap().host, "smarthost.test");
    }
}
