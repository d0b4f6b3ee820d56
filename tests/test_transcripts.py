"""The receive side of the contract, as SMTP dialogues.

Each transcript is played against a fresh server (see harness/transcript.py
for the notation); the D: lines say what the Maildirs hold afterwards, and
nothing else may be delivered. Replies are checked on the 3-digit code and
the enhanced status code, never on the free text.
"""

import pytest

from harness.transcript import Transcript as T, run

# The greeting and a successful EHLO, which most dialogues start with.
HELLO = """
S: 220
C: EHLO client.test
S: 250
"""

# Low limits for the dialogues about limits.
LIMITS = {"limits": {"max_message_size": 2000, "max_recipients": 3}}

SMUGGLE = (
    b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.com>\r\n"
    b"DATA\r\nsmuggled\r\n"
)

TRANSCRIPTS = [
    # -- the basic replies -----------------------------------------------
    T("ehlo_transaction", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: hello
        C:
        C: hi there
        C: .
        S: 250 2.0.0
        C: QUIT
        S: 221 2.0.0
        S: closed
        D: alice@example.com from=<s@remote.test> <- Subject: hello\\n\\nhi there\\n
    """),
    T("helo_transaction", """
        S: 220
        C: HELO client.test
        S: 250
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<bob@other.test>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: old-school
        C:
        C: .
        S: 250 2.0.0
        C: QUIT
        S: 221 2.0.0
        D: bob@other.test <- Subject: old-school\\n\\n
    """),
    T("simple_commands", HELLO + """
        C: NOOP
        S: 250 2.0.0
        C: NOOP with an argument
        S: 250 2.0.0
        C: RSET
        S: 250 2.0.0
        C: VRFY alice
        S: 252 2.5.0
        C: EXPN staff
        S: 502 5.5.1
        C: HELP
        S: 214 2.0.0
        C: FROB nicate
        S: 500 5.5.1
        C: QUIT
        S: 221 2.0.0
        S: closed
    """),
    T("commands_allowed_before_ehlo", """
        S: 220
        C: NOOP
        S: 250 2.0.0
        C: RSET
        S: 250 2.0.0
        C: HELP
        S: 214 2.0.0
        C: QUIT
        S: 221 2.0.0
    """),
    T("verbs_are_case_insensitive", """
        S: 220
        C: ehlo client.test
        S: 250
        C: mail from:<s@remote.test>
        S: 250 2.1.0
        C: rCpT tO:<alice@example.com>
        S: 250 2.1.5
        C: DaTa
        S: 354
        C: Subject: cases
        C:
        C: .
        S: 250 2.0.0
        C: noop
        S: 250 2.0.0
        C: qUiT
        S: 221 2.0.0
        D: alice@example.com <- Subject: cases\\n\\n
    """),
    T("dot_unstuffing_and_crlf_to_lf", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: dots
        C:
        C: ..one leading dot
        C: ...
        C: .. 
        C: not. a. dot. line.
        C:  .indented
        C: .
        S: 250 2.0.0
        D: alice@example.com <- Subject: dots\\n\\n.one leading dot\\n..\\n. \\nnot. a. dot. line.\\n .indented\\n
    """),

    # -- bad sequence: 503 5.5.1 -----------------------------------------
    T("mail_before_ehlo", """
        S: 220
        C: MAIL FROM:<s@remote.test>
        S: 503 5.5.1
        C: EHLO client.test
        S: 250
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
    """),
    T("mail_twice_keeps_the_first", HELLO + """
        C: MAIL FROM:<first@remote.test>
        S: 250 2.1.0
        C: MAIL FROM:<second@remote.test>
        S: 503 5.5.1
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: first
        C:
        C: .
        S: 250 2.0.0
        D: alice@example.com from=<first@remote.test> <- Subject: first\\n\\n
    """),
    T("rcpt_before_mail", HELLO + """
        C: RCPT TO:<alice@example.com>
        S: 503 5.5.1
    """),
    T("data_before_rcpt", HELLO + """
        C: DATA
        S: 503 5.5.1
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: DATA
        S: 503 5.5.1
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: finally
        C:
        C: .
        S: 250 2.0.0
        D: alice@example.com <- Subject: finally\\n\\n
    """),
    T("data_after_only_rejected_rcpts", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@remote.test>
        S: 550 5.7.1
        C: DATA
        S: 503 5.5.1
        C: NOOP
        S: 250 2.0.0
    """),
    T("one_rejected_rcpt_does_not_spoil_the_rest", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@remote.test>
        S: 550 5.7.1
        C: RCPT TO:<bob@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: partial
        C:
        C: .
        S: 250 2.0.0
        D: bob@example.com <- Subject: partial\\n\\n
    """),
    T("transaction_ends_after_data", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: one
        C:
        C: .
        S: 250 2.0.0
        C: RCPT TO:<bob@example.com>
        S: 503 5.5.1
        C: DATA
        S: 503 5.5.1
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        D: alice@example.com <- Subject: one\\n\\n
    """),
    # The chunk of a refused BDAT is still read, not run as commands.
    T("bdat_before_mail_consumes_chunk", HELLO + """
        C: BDAT 6
        C: QUIT
        C: NOOP
        S: 503 5.5.1
        S: 250 2.0.0
    """),
    T("bdat_before_rcpt_consumes_chunk", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: BDAT 6 LAST
        C: QUIT
        C: NOOP
        S: 503 5.5.1
        S: 250 2.0.0
        C: RSET
        S: 250 2.0.0
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: BDAT 12 LAST
        C~ Subject: b\\r\\n
        S: 250 2.0.0
        D: alice@example.com <- Subject: b\\n
    """),
    # RFC 3030: DATA after BDAT is 503, and the client must RSET.
    T("data_after_bdat_refused", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: BDAT 7
        C~ Subject
        S: 250 2.0.0
        C: DATA
        S: 503 5.5.1
        C: RSET
        S: 250 2.0.0
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<bob@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: after rset
        C:
        C: .
        S: 250 2.0.0
        D: bob@example.com <- Subject: after rset\\n\\n
    """),

    # -- syntax: 501 5.5.2 / 5.1.7 / 5.1.3, 555 5.5.4 ----------------------
    T("syntax_errors", """
        S: 220
        C: HELO
        S: 501 5.5.2
        C: EHLO
        S: 501 5.5.2
        C: EHLO client.test
        S: 250
        C: MAIL
        S: 501 5.5.2
        C: MAIL FROM
        S: 501 5.5.2
        C: MAIL TO:<s@remote.test>
        S: 501 5.5.2
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT
        S: 501 5.5.2
        C: RCPT TO
        S: 501 5.5.2
        C: RCPT FROM:<alice@example.com>
        S: 501 5.5.2
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
    """),
    T("bad_sender_paths", HELLO + """
        C: MAIL FROM:<s@remote.test
        S: 501 5.1.7
        C: MAIL FROM:<@>
        S: 501 5.1.7
        C: MAIL FROM:<s@>
        S: 501 5.1.7
        C: MAIL FROM:<s@remote..test>
        S: 501 5.1.7
        C: MAIL FROM:<s p@remote.test>
        S: 501 5.1.7
        C: MAIL FROM:<s@@remote.test>
        S: 501 5.1.7
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
    """),
    T("bad_recipient_paths", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com
        S: 501 5.1.3
        C: RCPT TO:<alice@>
        S: 501 5.1.3
        C: RCPT TO:<>
        S: 501 5.1.3
        C: RCPT TO:<alice@exam ple.com>
        S: 501 5.1.3
        C: RCPT TO:<alice@@example.com>
        S: 501 5.1.3
        C: RCPT TO:<alice@example..com>
        S: 501 5.1.3
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
    """),
    T("esmtp_parameters", HELLO + """
        C: MAIL FROM:<s@remote.test> FOO=BAR
        S: 555 5.5.4
        C: MAIL FROM:<s@remote.test> SIZE=100 BODY=8BITMIME SMTPUTF8
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com> NOTIFY=NEVER
        S: 555 5.5.4
        C: RCPT TO:<alice@example.com> XYZZY
        S: 555 5.5.4
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: RSET
        S: 250 2.0.0
        C: MAIL FROM:<s@remote.test> body=7bit size=10
        S: 250 2.1.0
    """),

    # -- addresses -------------------------------------------------------
    T("null_sender", HELLO + """
        C: MAIL FROM:<>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: bounce
        C:
        C: .
        S: 250 2.0.0
        D: alice@example.com from=<> <- Subject: bounce\\n\\n
    """),
    # RFC 5321 4.5.1: <postmaster> without a domain, any case.
    T("postmaster_any_case", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<postmaster>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: pm1
        C:
        C: .
        S: 250 2.0.0
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<PostMaster>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: pm2
        C:
        C: .
        S: 250 2.0.0
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<POSTMASTER>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: pm3
        C:
        C: .
        S: 250 2.0.0
        D: postmaster@example.com <- Subject: pm1\\n\\n
        D: postmaster@example.com <- Subject: pm2\\n\\n
        D: postmaster@example.com <- Subject: pm3\\n\\n
    """),
    T("quoted_local_parts", HELLO + """
        C: MAIL FROM:<"odd sender"@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<"john doe"@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: quoted
        C:
        C: .
        S: 250 2.0.0
        D: ?@example.com <- Subject: quoted\\n\\n
    """),
    T("source_routes_ignored", HELLO + """
        C: MAIL FROM:<@relay1.test,@relay2.test:s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<@hop.test:alice@example.com>
        S: 250 2.1.5
        C: RCPT TO:<@a.test,@b.test:bob@other.test>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: routed
        C:
        C: .
        S: 250 2.0.0
        D: alice@example.com from=<s@remote.test> <- Subject: routed\\n\\n
        D: bob@other.test from=<s@remote.test> <- Subject: routed\\n\\n
    """),
    T("non_local_domains_refused", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@[127.0.0.1]>
        S: 550 5.7.1
        C: RCPT TO:<alice@remote.test>
        S: 550 5.7.1
        C: RCPT TO:<alice@sub.example.com>
        S: 550 5.7.1
        C: RCPT TO:<alice@example.com.evil.test>
        S: 550 5.7.1
        C: RCPT TO:<Alice@EXAMPLE.COM>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: case
        C:
        C: .
        S: 250 2.0.0
        D: alice@example.com <- Subject: case\\n\\n
    """),
    T("recipient_delimiter", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice+lists@example.com>
        S: 250 2.1.5
        C: RCPT TO:<BOB+x+y@Other.Test>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: tagged
        C:
        C: .
        S: 250 2.0.0
        D: alice@example.com <- Subject: tagged\\n\\n
        D: bob@other.test <- Subject: tagged\\n\\n
    """),
    T("duplicate_rcpt_delivered_once", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: twice
        C:
        C: .
        S: 250 2.0.0
        D: alice@example.com <- Subject: twice\\n\\n
    """),
    T("smtputf8_addresses", HELLO + """
        C: MAIL FROM:<jörg@remote.test>
        S: 553 5.6.7
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<jörg@example.com>
        S: 553 5.6.7
        C: RCPT TO:<alice@exämple.com>
        S: 553 5.6.7
        C: RSET
        S: 250 2.0.0
        C: MAIL FROM:<jörg@remote.test> SMTPUTF8
        S: 250 2.1.0
        C: RCPT TO:<jörg@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: grüße
        C:
        C: .
        S: 250 2.0.0
        D: jörg@example.com from=<jörg@remote.test> <- Subject: grüße\\n\\n
    """),

    # -- [local] configuration --------------------------------------------
    # "alice" is a user in every local domain; "bob@other.test" in one.
    T("users_list", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: RCPT TO:<alice@other.test>
        S: 250 2.1.5
        C: RCPT TO:<bob@other.test>
        S: 250 2.1.5
        C: RCPT TO:<bob@example.com>
        S: 550 5.1.1
        C: RCPT TO:<zed@other.test>
        S: 550 5.1.1
        C: RCPT TO:<bob@remote.test>
        S: 550 5.7.1
        C: DATA
        S: 354
        C: Subject: users
        C:
        C: .
        S: 250 2.0.0
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<Alice+tag@EXAMPLE.com>
        S: 250 2.1.5
        C: RCPT TO:<postmaster>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: normalised
        C:
        C: .
        S: 250 2.0.0
        D: alice@example.com <- Subject: users\\n\\n
        D: alice@other.test <- Subject: users\\n\\n
        D: bob@other.test <- Subject: users\\n\\n
        D: alice@example.com <- Subject: normalised\\n\\n
        D: postmaster@example.com <- Subject: normalised\\n\\n
    """, config={"local": {"users": ["alice", "bob@other.test"]}}),
    T("recipient_delimiter_off", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice+tag@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: no delimiter
        C:
        C: .
        S: 250 2.0.0
        D: alice+tag@example.com <- Subject: no delimiter\\n\\n
    """, config={"local": {"recipient_delimiter": ""}}),
    T("recipient_delimiter_dash", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice-tag@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: dash
        C:
        C: .
        S: 250 2.0.0
        D: alice@example.com <- Subject: dash\\n\\n
    """, config={"local": {"recipient_delimiter": "-"}}),
    T("domains_from_config", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 550 5.7.1
        C: RCPT TO:<alice@cfg.test>
        S: 250 2.1.5
        C: RCPT TO:<postmaster>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: cfg
        C:
        C: .
        S: 250 2.0.0
        D: alice@cfg.test <- Subject: cfg\\n\\n
        D: postmaster@cfg.test <- Subject: cfg\\n\\n
    """, config={"local": {"domains": ["cfg.test", "second.test"]}}, domains=()),
    T("domain_flag_replaces_config_domains", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@cfg.test>
        S: 550 5.7.1
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
    """, config={"local": {"domains": ["cfg.test"]}}, domains=("example.com",)),

    # -- RSET and EHLO reset the transaction -------------------------------
    T("rset_mid_transaction", HELLO + """
        C: MAIL FROM:<old@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: RSET
        S: 250 2.0.0
        C: DATA
        S: 503 5.5.1
        C: RCPT TO:<alice@example.com>
        S: 503 5.5.1
        C: MAIL FROM:<new@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<bob@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: after rset
        C:
        C: .
        S: 250 2.0.0
        D: bob@example.com from=<new@remote.test> <- Subject: after rset\\n\\n
    """),
    T("ehlo_mid_transaction", HELLO + """
        C: MAIL FROM:<old@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: EHLO client.test
        S: 250
        C: DATA
        S: 503 5.5.1
        C: MAIL FROM:<new@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<bob@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: after ehlo
        C:
        C: .
        S: 250 2.0.0
        D: bob@example.com from=<new@remote.test> <- Subject: after ehlo\\n\\n
    """),

    # -- BDAT (RFC 3030): content taken verbatim ---------------------------
    T("bdat_single_chunk", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: BDAT 30 LAST
        C~ Subject: b\\r\\n\\r\\n..kept\\r\\n.\\r\\nend\\r\\n
        S: 250 2.0.0
        D: alice@example.com <- Subject: b\\n\\n..kept\\n.\\nend\\n
    """),
    # A CRLF split across two chunks is still a CRLF.
    T("bdat_multi_chunk_then_zero_last", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: BDAT 13
        C~ Subject: two\\r
        S: 250 2.0.0
        C: BDAT 11
        C~ \\n\\r\\nchunked\\r
        S: 250 2.0.0
        C: BDAT 1
        C~ \\n
        S: 250 2.0.0
        C: BDAT 0 LAST
        S: 250 2.0.0
        D: alice@example.com <- Subject: two\\n\\nchunked\\n
    """),
    T("bdat_zero_last_alone", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: BDAT 0 LAST
        S: 250 2.0.0
        D: alice@example.com <-
    """),
    T("bdat_pipelined_in_one_write", HELLO + """
        C: MAIL FROM:<s@remote.test>
        C: RCPT TO:<alice@example.com>
        C: BDAT 12
        C~ Subject: p\\r\\n
        C: BDAT 6 LAST
        C~ \\r\\nok\\r\\n
        C: QUIT
        S: 250 2.1.0
        S: 250 2.1.5
        S: 250 2.0.0
        S: 250 2.0.0
        S: 221 2.0.0
        S: closed
        D: alice@example.com <- Subject: p\\n\\nok\\n
    """),

    # -- pipelining (RFC 2920) -------------------------------------------
    T("whole_transaction_in_one_write", HELLO + """
        C: MAIL FROM:<s@remote.test>
        C: RCPT TO:<alice@example.com>
        C: RCPT TO:<carol@other.test>
        C: DATA
        C: Subject: one write
        C:
        C: all at once
        C: .
        C: QUIT
        S: 250 2.1.0
        S: 250 2.1.5
        S: 250 2.1.5
        S: 354
        S: 250 2.0.0
        S: 221 2.0.0
        S: closed
        D: alice@example.com <- Subject: one write\\n\\nall at once\\n
        D: carol@other.test <- Subject: one write\\n\\nall at once\\n
    """),
    T("rfc2920_groups", HELLO + """
        C: MAIL FROM:<s@remote.test>
        C: RCPT TO:<nobody@remote.test>
        C: RCPT TO:<alice@example.com>
        C: DATA
        S: 250 2.1.0
        S: 550 5.7.1
        S: 250 2.1.5
        S: 354
        C: Subject: g1
        C:
        C: .
        C: MAIL FROM:<s@remote.test>
        C: RCPT TO:<bob@example.com>
        C: DATA
        S: 250 2.0.0
        S: 250 2.1.0
        S: 250 2.1.5
        S: 354
        C: Subject: g2
        C:
        C: .
        C: QUIT
        S: 250 2.0.0
        S: 221 2.0.0
        D: alice@example.com <- Subject: g1\\n\\n
        D: bob@example.com <- Subject: g2\\n\\n
    """),

    # -- bare CR / LF: 550 5.6.0 after the real end of data ----------------
    T("bare_lf_in_data_rejected", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C~ Subject: lf\\r\\n\\r\\nbare\\nlf\\r\\n.\\r\\n
        S: 550 5.6.0
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
    """),
    T("bare_cr_in_data_rejected", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C~ Subject: cr\\r\\n\\r\\nbare\\rcr\\r\\n.\\r\\n
        S: 550 5.6.0
        C: NOOP
        S: 250 2.0.0
    """),
    T("bare_lf_in_bdat_rejected", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: BDAT 10 LAST
        C~ a\\nb\\r\\nccc\\r\\n
        S: 550 5.6.0
        C: NOOP
        S: 250 2.0.0
    """),
    # -- limits (LIMITS config) ------------------------------------------
    T("size_parameter", """
        S: 220
        C: EHLO client.test
        S: 250
        C: MAIL FROM:<s@remote.test> SIZE=2000
        S: 250 2.1.0
        C: RSET
        S: 250 2.0.0
        C: MAIL FROM:<s@remote.test> SIZE=2001
        S: 552 5.3.4
        C: MAIL FROM:<s@remote.test> SIZE=999999999999
        S: 552 5.3.4
        C: MAIL FROM:<s@remote.test> SIZE=10
        S: 250 2.1.0
    """, config=LIMITS),
    T("message_too_big_data", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C= b"Subject: big\\r\\n\\r\\n" + b"x" * 78 + b"\\r\\n" + (b"y" * 78 + b"\\r\\n") * 40 + b".\\r\\n"
        S: 552 5.3.4
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C: Subject: small
        C:
        C: .
        S: 250 2.0.0
        D: alice@example.com <- Subject: small\\n\\n
    """, config=LIMITS),
    T("message_too_big_bdat", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: BDAT 1200
        C= b"a" * 1198 + b"\\r\\n"
        S: 250 2.0.0
        C: BDAT 1200 LAST
        C= b"b" * 1198 + b"\\r\\n"
        S: 552 5.3.4
        C: NOOP
        S: 250 2.0.0
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: BDAT 7 LAST
        C~ small\\r\\n
        S: 250 2.0.0
        D: alice@example.com <- small\\n
    """, config=LIMITS),
    T("too_many_recipients", HELLO + """
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<r1@example.com>
        S: 250 2.1.5
        C: RCPT TO:<r2@example.com>
        S: 250 2.1.5
        C: RCPT TO:<r3@other.test>
        S: 250 2.1.5
        C: RCPT TO:<r4@example.com>
        S: 452 4.5.3
        C: DATA
        S: 354
        C: Subject: three
        C:
        C: .
        S: 250 2.0.0
        D: r1@example.com <- Subject: three\\n\\n
        D: r2@example.com <- Subject: three\\n\\n
        D: r3@other.test <- Subject: three\\n\\n
    """, config=LIMITS),
    # max_line_length = 2048 including the CRLF.
    T("command_line_too_long", HELLO + """
        C= b"NOOP " + b"x" * 2041 + b"\\r\\n"
        S: 250 2.0.0
        C= b"NOOP " + b"x" * 2042 + b"\\r\\n"
        S: 500 5.5.6
        C= b"NOOP " + b"x" * 100000 + b" QUIT\\r\\n"
        S: 500 5.5.6
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
    """),
]


def hundred_recipients() -> T:
    """100 RCPTs pipelined in one write, one message to all of them."""
    users = [f"u{i:03d}@example.com" for i in range(100)]
    text = HELLO + "C: MAIL FROM:<s@remote.test>\n"
    text += "".join(f"C: RCPT TO:<{u}>\n" for u in users)
    text += "C: DATA\nS: 250 2.1.0\n" + "S: 250 2.1.5\n" * 100 + "S: 354\n"
    text += "C: Subject: to a hundred\nC:\nC: .\nS: 250 2.0.0\n"
    text += "".join(f"D: {u} <- Subject: to a hundred\\n\\n\n" for u in users)
    return T("hundred_recipients", text)


def smuggling(name: str, fake_end: bytes) -> T:
    """A fake end of data inside the body, followed by a whole smuggled
    transaction, then the real end and a pipelined honest transaction.

    The message holding the smuggled bytes must be refused (550 5.6.0) as
    one message; the smuggled commands must never run; the honest
    transaction after the real end must work."""
    body = b"Subject: smuggle\r\n\r\nhello" + fake_end + SMUGGLE
    return T(f"smuggling_{name}", HELLO + f"""
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: DATA
        S: 354
        C= {body!r} + b".\\r\\n"
        C: MAIL FROM:<s@remote.test>
        C: RCPT TO:<carol@example.com>
        C: DATA
        S: 550 5.6.0
        S: 250 2.1.0
        S: 250 2.1.5
        S: 354
        C: Subject: honest
        C:
        C: .
        C: QUIT
        S: 250 2.0.0
        S: 221 2.0.0
        D: carol@example.com <- Subject: honest\\n\\n
    """)


def bdat_smuggling() -> T:
    """In BDAT, <CRLF>.<CRLF> and what follows are content, not commands."""
    chunk = b"hi\r\n.\r\n" + SMUGGLE
    return T("smuggling_bdat_is_verbatim", HELLO + f"""
        C: MAIL FROM:<s@remote.test>
        S: 250 2.1.0
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.5
        C: BDAT {len(chunk)} LAST
        C= {chunk!r}
        C: QUIT
        S: 250 2.0.0
        S: 221 2.0.0
        D: alice@example.com <- hi\\n.\\nMAIL FROM:<evil@remote.test>\\nRCPT TO:<bob@example.com>\\nDATA\\nsmuggled\\n
    """)


SMUGGLING = [
    bdat_smuggling(),
    smuggling("lf_dot_lf", b"\n.\n"),
    smuggling("lf_dot_crlf", b"\n.\r\n"),
    smuggling("cr_dot_cr", b"\r.\r"),
    smuggling("crlf_dot_lf", b"\r\n.\n"),
    smuggling("cr_dot_crlf", b"\r.\r\n"),
    smuggling("crlf_dot_cr", b"\r\n.\r"),
]

ALL = TRANSCRIPTS + [hundred_recipients()] + SMUGGLING


@pytest.mark.parametrize("t", ALL, ids=str)
def test_transcript(t, start_server):
    server = start_server(config=t.config, domains=t.domains)
    run(t.text, server)
