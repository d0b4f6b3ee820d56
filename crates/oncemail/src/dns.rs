//! dns: where mail for a domain goes (RFC 5321 §5.1), with hickory-resolver.
//!
//! MX records sorted by preference, equal preferences in random order; no MX at all means
//! the domain itself is the host (implicit MX); a Null MX (RFC 7505: one record, ".")
//! means the domain accepts no mail. A name that does not exist is a permanent failure;
//! every other lookup error is temporary.
//!
//! The resolver is built from `/etc/resolv.conf` on first use, so a server that never
//! relays (or only uses static routes, as the tests do) never needs DNS.

use std::net::IpAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use tokio::sync::OnceCell;

/// What the MX lookup said about a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailHosts {
    /// Hosts to try, in order.
    Hosts(Vec<String>),
    /// RFC 7505: the domain says it takes no mail.
    NullMx,
    /// The domain does not exist.
    NoSuchDomain,
}

/// A lookup that may work later.
#[derive(Debug, Clone)]
pub struct Temporary(pub String);

#[derive(Default)]
pub struct Dns {
    resolver: OnceCell<Result<TokioResolver, String>>,
}

impl Dns {
    pub async fn mail_hosts(&self, domain: &str) -> Result<MailHosts, Temporary> {
        let resolver = self.resolver().await?;
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let records = lookup.answers().iter().filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                });
                Ok(order(records.collect(), domain, seed()))
            }
            Err(e) if e.is_nx_domain() => Ok(MailHosts::NoSuchDomain),
            Err(e) if e.is_no_records_found() => Ok(MailHosts::Hosts(vec![domain.to_string()])),
            Err(e) => Err(Temporary(format!("MX lookup for {domain}: {e}"))),
        }
    }

    /// A host's addresses, IPv4 and IPv6, as the resolver orders them.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, Temporary> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            return Ok(vec![ip]);
        }
        let resolver = self.resolver().await?;
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match resolver.lookup_ip(fqdn.as_str()).await {
            Ok(found) => Ok(found.iter().collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(Temporary(format!("address lookup for {host}: {e}"))),
        }
    }

    async fn resolver(&self) -> Result<&TokioResolver, Temporary> {
        let built = self
            .resolver
            .get_or_init(|| async {
                TokioResolver::builder_tokio()
                    .and_then(|builder| builder.build())
                    .map_err(|e| format!("cannot set up DNS: {e}"))
            })
            .await;
        built.as_ref().map_err(|e| Temporary(e.clone()))
    }
}

/// Sorts MX records by preference, shuffling equal ones with `seed`; recognises Null MX.
fn order(mut records: Vec<(u16, String)>, domain: &str, seed: u64) -> MailHosts {
    let is_root = |name: &str| name.is_empty() || name == ".";
    if records.len() == 1 && is_root(&records[0].1) {
        return MailHosts::NullMx;
    }
    records.retain(|(_, name)| !is_root(name));
    if records.is_empty() {
        return MailHosts::Hosts(vec![domain.to_string()]);
    }

    // Sort by (preference, pseudo-random key): random order among equals (RFC 5321 §5.1).
    let mut keyed: Vec<(u16, u64, String)> = records
        .into_iter()
        .enumerate()
        .map(|(i, (pref, name))| (pref, mix(seed ^ i as u64), name))
        .collect();
    keyed.sort();
    let hosts = keyed.into_iter().map(|(_, _, name)| name.trim_end_matches('.').to_string());
    MailHosts::Hosts(hosts.collect())
}

/// SplitMix64: enough randomness to spread load among equal MX hosts.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(answer: MailHosts) -> Vec<String> {
        match answer {
            MailHosts::Hosts(hosts) => hosts,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lowest_preference_first() {
        let records = vec![(20, "b.example.".into()), (10, "a.example.".into())];
        assert_eq!(hosts(order(records, "example", 1)), ["a.example", "b.example"]);
    }

    #[test]
    fn equal_preferences_come_in_varying_order() {
        let records: Vec<(u16, String)> = (0..4).map(|i| (10, format!("mx{i}.example"))).collect();
        let orders: std::collections::HashSet<Vec<String>> =
            (0..20).map(|seed| hosts(order(records.clone(), "example", seed))).collect();
        assert!(orders.len() > 1, "the seed changes the order among equals");
        for order in orders {
            assert_eq!(order.len(), 4);
        }
    }

    #[test]
    fn null_mx_and_implicit_mx() {
        assert_eq!(order(vec![(0, ".".into())], "example", 0), MailHosts::NullMx);
        assert_eq!(hosts(order(Vec::new(), "example.org", 0)), ["example.org"]);
    }

    #[tokio::test]
    async fn ip_addresses_need_no_lookup() {
        let dns = Dns::default();
        let ips = dns.addresses("[127.0.0.1]").await.unwrap();
        assert_eq!(ips, vec![IpAddr::from([127, 0, 0, 1])]);
    }
}
