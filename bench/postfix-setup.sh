#!/usr/bin/env bash
# Install and configure Debian's Postfix as a loopback-only benchmark anchor.
# (Copied from the workplace's bench/postfix-setup.sh; adapted for bench/run:
#  port 2526 by default so it never clashes with oncemail's 2525, no swaks,
#  a process limit and message size limit high enough for bench/run's
#  1,000-session memory case.)
#
#   - SMTP server on 127.0.0.1:2526 only (the port 25 listener is disabled)
#   - every accepted message is delivered by the "discard" transport, so no
#     mail leaves the machine and the queue drains by itself
#   - durability path left at Postfix defaults (cleanup fsync()s each queue
#     file before smtpd answers 250 to the final ".")
#
# Idempotent: rerunning re-applies the same settings and restarts Postfix.
# Needs root, Debian 12 (bookworm), no systemd required (uses `postfix start`).
#
# Usage: sudo bash postfix-setup.sh [--no-start]
set -euo pipefail

PORT="${POSTFIX_BENCH_PORT:-2526}"
ADDR=127.0.0.1
START=1
[ "${1:-}" = "--no-start" ] && START=0

export DEBIAN_FRONTEND=noninteractive

# 1. Packages. Preseed debconf so the install never prompts.
if ! dpkg -s postfix >/dev/null 2>&1; then
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
    echo "postfix postfix/mailname string bench.localdomain" | debconf-set-selections
    if ! apt-get install -y postfix >/dev/null; then
        apt-get update -qq
        apt-get install -y postfix >/dev/null
    fi
fi
# smtp-source / smtp-sink ship in the postfix package itself on Debian.
for t in /usr/sbin/postfix /usr/sbin/postconf /usr/sbin/smtp-source /usr/sbin/smtp-sink; do
    [ -x "$t" ] || { echo "missing $t" >&2; exit 1; }
done

# 2. main.cf
postconf -e \
    "inet_interfaces = $ADDR" \
    "inet_protocols = ipv4" \
    "myhostname = bench.localdomain" \
    "mydestination = localhost" \
    "mynetworks = 127.0.0.0/8" \
    "relay_domains =" \
    "relayhost =" \
    "default_transport = discard" \
    "relay_transport = discard" \
    "local_transport = discard" \
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
    "smtpd_recipient_restrictions =" \
    "smtpd_tls_security_level = none" \
    "smtp_tls_security_level = none" \
    "default_process_limit = 2200" \
    "message_size_limit = 52428800" \
    "smtpd_client_connection_count_limit = 0" \
    "smtpd_client_connection_rate_limit = 0" \
    "maillog_file = /var/log/postfix-bench.log"

# 3. master.cf: no chroot (Debian defaults to chroot, which needs files copied
#    into the spool by the init scripts), drop the port-25 listener, add ours.
postconf -F '*/*/chroot = n'
if [ -n "$(postconf -M smtp/inet 2>/dev/null)" ]; then
    postconf -M# smtp/inet
fi
postconf -M "$ADDR:$PORT/inet=$ADDR:$PORT inet n - n - - smtpd"

postfix check

# 4. (Re)start.
if [ "$START" = 1 ]; then
    if postfix status >/dev/null 2>&1; then
        postfix stop >/dev/null 2>&1 || true
        for _ in $(seq 1 50); do postfix status >/dev/null 2>&1 || break; sleep 0.1; done
    fi
    postfix start
    for _ in $(seq 1 50); do
        if (exec 3<>"/dev/tcp/$ADDR/$PORT") 2>/dev/null; then break; fi
        sleep 0.1
    done
    postfix status
    echo "postfix listening on $ADDR:$PORT (queue: $(postconf -h queue_directory))"
fi
