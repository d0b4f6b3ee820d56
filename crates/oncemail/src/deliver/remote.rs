//! deliver::remote: one attempt to hand some recipients of a message to another host.
//!
//! # Routing
//!
//! A static route (`relay.routes`, `"*"` for a smart host) wins over DNS; otherwise the
//! domain's MX hosts on `relay.port` (see [`crate::dns`]). Hosts are tried in order, each
//! of its addresses in turn, until one holds a conversation: a host that cannot be reached
//! or refuses the greeting sends us to the next; once a transaction ran, its replies decide.
//!
//! # Limits
//!
//! At most `relay.concurrency` deliveries run at once, and `relay.per_destination` to any
//! one destination (domain, or static target), so one slow destination cannot hold the
//! others up. A connection that finished cleanly is kept for a short while and reused for
//! the next message to the same address.
//!
//! # Transaction IDs
//!
//! Every attempt names its transaction `TRANSID=<queue id.destination@our host>` when the
//! next hop offers CHECKPOINT (RFC 1845). The ID is the same on every retry of the message
//! to that destination, so after a "possibly delivered" attempt an oncemail next hop
//! recognises the retry and answers with the original's reply instead of a second copy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use spool::{Spool, Stored};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use super::relay::client::{self, Connection, Outcome};
use crate::config::{Relay, Timeouts};
use crate::dns::{Dns, MailHosts};
use crate::envelope::Envelope;

/// How long an idle connection is kept for reuse.
const IDLE: Duration = Duration::from_secs(30);

/// How one recipient's attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    Delivered {
        relay: String,
        reply: String,
    },
    Deferred {
        relay: String,
        reason: String,
    },
    /// Lost after our final dot: the next hop may have it. Retried like a deferral.
    PossiblyDelivered {
        relay: String,
        reason: String,
    },
    Failed {
        relay: String,
        status: String,
        diagnostic: String,
    },
}

/// Some recipients of one message, all for `domain`.
pub struct Group<'a> {
    pub domain: &'a str,
    /// (index into the envelope's recipients, address in SMTP form)
    pub recipients: Vec<(usize, String)>,
    pub envelope: &'a Envelope,
    pub stored: &'a Stored,
}

pub struct Remote {
    relay: Relay,
    settings: client::Settings,
    hostname: String,
    spool: Spool,
    dns: Dns,
    global: Semaphore,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    idle: Mutex<HashMap<SocketAddr, Vec<(Instant, Connection)>>>,
}

/// Where to try, or the result for every recipient when there is nowhere.
enum Destination {
    Hosts { key: String, hosts: Vec<String>, port: u16 },
    Nowhere(RcptResult),
}

impl Remote {
    pub fn new(relay: Relay, hostname: String, spool: Spool) -> Remote {
        let settings = client::Settings {
            helo: hostname.clone(),
            timeouts: client_timeouts(&relay.timeouts),
            starttls: relay.starttls,
        };
        Remote {
            global: Semaphore::new(relay.concurrency),
            relay,
            settings,
            hostname,
            spool,
            dns: Dns::default(),
            per_destination: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Delivers the group; one result per recipient, in the group's order.
    pub async fn deliver(&self, group: &Group<'_>) -> Vec<(usize, RcptResult)> {
        let (key, hosts, port) = match self.destination(group.domain).await {
            Destination::Hosts { key, hosts, port } => (key, hosts, port),
            Destination::Nowhere(result) => return every(group, result),
        };

        let Ok(_global) = self.global.acquire().await else {
            return every(group, deferred("", "shutting down"));
        };
        let limit = self.destination_limit(&key);
        let Ok(_slot) = limit.acquire().await else {
            return every(group, deferred("", "shutting down"));
        };

        let mut last_error = String::from("no address found");
        for host in &hosts {
            let addrs = match self.dns.addresses(host).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    last_error = e.0;
                    continue;
                }
            };
            for ip in addrs {
                match self.try_address(group, &key, host, ip, port).await {
                    Ok(results) => return results,
                    Err(e) => last_error = e,
                }
            }
        }
        every(group, deferred(&hosts.join(","), &last_error))
    }

    /// A conversation with one address: `Err` when it never got as far as a transaction.
    async fn try_address(
        &self,
        group: &Group<'_>,
        key: &str,
        host: &str,
        ip: IpAddr,
        port: u16,
    ) -> Result<Vec<(usize, RcptResult)>, String> {
        let addr = SocketAddr::new(ip, port);
        let relay = format!("{host}[{ip}]:{port}");
        let mut connection = match self.take_idle(addr) {
            Some(connection) => connection,
            None => Connection::open(addr, host, &self.settings)
                .await
                .map_err(|e| format!("{relay}: {e}"))?,
        };

        let delivery = self.send(&mut connection, group, key).await;
        let results = match delivery {
            Ok(delivery) => delivery.outcomes,
            Err(e) => return Ok(every(group, deferred(&relay, &e))),
        };
        if connection.usable() {
            self.put_idle(addr, connection);
        } else {
            tokio::spawn(connection.quit());
        }

        let relay = &relay;
        let mapped = group
            .recipients
            .iter()
            .zip(results)
            .map(|((index, _), outcome)| (*index, map_outcome(relay, outcome)));
        Ok(mapped.collect())
    }

    async fn send(
        &self,
        connection: &mut Connection,
        group: &Group<'_>,
        key: &str,
    ) -> Result<client::Delivery, String> {
        // Our Received: field goes first (RFC 5321 §4.4), then the message as received.
        let body = self.spool.open_body(&group.stored.body).map_err(|e| e.to_string())?;
        let len = body.limit();
        let trace = group.envelope.received.as_bytes();
        let mut body = trace.chain(tokio::fs::File::from_std(body.into_inner()).take(len));

        let recipients: Vec<String> = group.recipients.iter().map(|(_, a)| a.clone()).collect();
        let transid = transid(&group.stored.qid.to_string(), key, &self.hostname);
        let message = client::Message {
            sender: &group.envelope.sender,
            recipients: &recipients,
            size: group.envelope.size + trace.len() as u64,
            eight_bit: group.envelope.eight_bit,
            smtputf8: group.envelope.smtputf8,
            transid: Some(&transid),
            body: &mut body,
        };
        Ok(connection.send(message).await)
    }

    async fn destination(&self, domain: &str) -> Destination {
        if let Some(target) = self.relay.route_for(domain) {
            let key = format!("{}:{}", target.host, target.port);
            return Destination::Hosts { key, hosts: vec![target.host.clone()], port: target.port };
        }
        if domain.starts_with('[') {
            let host = domain.trim_start_matches('[').trim_end_matches(']');
            let host = host.trim_start_matches("IPv6:").to_string();
            let key = domain.to_string();
            return Destination::Hosts { key, hosts: vec![host], port: self.relay.port };
        }

        match self.dns.mail_hosts(domain).await {
            Ok(MailHosts::Hosts(hosts)) => {
                let key = domain.to_string();
                Destination::Hosts { key, hosts, port: self.relay.port }
            }
            Ok(MailHosts::NullMx) => Destination::Nowhere(failed(
                "5.1.10",
                &format!("{domain} accepts no mail (null MX, RFC 7505)"),
            )),
            Ok(MailHosts::NoSuchDomain) => {
                Destination::Nowhere(failed("5.1.2", &format!("domain {domain} does not exist")))
            }
            Err(e) => Destination::Nowhere(deferred("", &e.0)),
        }
    }

    fn destination_limit(&self, key: &str) -> Arc<Semaphore> {
        let mut limits = self.per_destination.lock().unwrap_or_else(|p| p.into_inner());
        let per = self.relay.per_destination;
        limits.entry(key.to_string()).or_insert_with(|| Arc::new(Semaphore::new(per))).clone()
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some((since, connection)) = list.pop() {
            if since.elapsed() < IDLE && connection.usable() {
                return Some(connection);
            }
            tokio::spawn(connection.quit());
        }
        None
    }

    fn put_idle(&self, addr: SocketAddr, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.entry(addr).or_default().push((Instant::now(), connection));
    }
}

/// The transaction ID for a message and destination: stable across retries.
fn transid(qid: &str, destination: &str, hostname: &str) -> String {
    let digest = Sha256::digest(destination.as_bytes());
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{qid}.{tag}@{hostname}")
}

fn map_outcome(relay: &str, outcome: Outcome) -> RcptResult {
    let relay = relay.to_string();
    match outcome {
        Outcome::Delivered(reply) => RcptResult::Delivered { relay, reply: reply.text() },
        Outcome::Deferred(reason) => RcptResult::Deferred { relay, reason },
        Outcome::PossiblyDelivered(reason) => RcptResult::PossiblyDelivered { relay, reason },
        Outcome::Failed(reply) => {
            let status = match reply.enhanced() {
                Some(status) if status.starts_with('5') => status.to_string(),
                _ => "5.0.0".to_string(),
            };
            let diagnostic = format!("{} {}", reply.code, reply.text());
            RcptResult::Failed { relay, status, diagnostic }
        }
    }
}

fn every(group: &Group<'_>, result: RcptResult) -> Vec<(usize, RcptResult)> {
    group.recipients.iter().map(|(index, _)| (*index, result.clone())).collect()
}

fn deferred(relay: &str, reason: &str) -> RcptResult {
    RcptResult::Deferred { relay: relay.to_string(), reason: reason.to_string() }
}

fn failed(status: &str, diagnostic: &str) -> RcptResult {
    RcptResult::Failed {
        relay: String::new(),
        status: status.to_string(),
        diagnostic: diagnostic.to_string(),
    }
}

fn client_timeouts(t: &Timeouts) -> client::Timeouts {
    client::Timeouts {
        connect: t.connect,
        greeting: t.greeting,
        ehlo: t.mail,
        mail: t.mail,
        rcpt: t.rcpt,
        data_init: t.data_init,
        data_block: t.data_block,
        data_term: t.data_term,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transids_are_stable_per_destination() {
        let a = transid("0ABC", "example.net", "mx.test");
        assert_eq!(a, transid("0ABC", "example.net", "mx.test"));
        assert_ne!(a, transid("0ABC", "example.org", "mx.test"));
        assert!(a.starts_with("0ABC.") && a.ends_with("@mx.test"));
    }

    #[test]
    fn failed_replies_keep_their_enhanced_status() {
        let reply = client::Reply::new(550, "5.1.1 No such user");
        let RcptResult::Failed { status, diagnostic, .. } =
            map_outcome("mx[192.0.2.1]:25", Outcome::Failed(reply))
        else {
            panic!("not failed");
        };
        assert_eq!(status, "5.1.1");
        assert!(diagnostic.starts_with("550 "));
        let RcptResult::Failed { status, .. } =
            map_outcome("x", Outcome::Failed(client::Reply::new(554, "no")))
        else {
            panic!("not failed");
        };
        assert_eq!(status, "5.0.0");
    }
}
