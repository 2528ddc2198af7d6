#!/usr/bin/env python3
"""Extract byte-exact TLS 1.3 test vectors from RFC 8448 into rfc8448.json.

Usage (from the repository root):

    python3 tests/vectors/extract_rfc8448.py [RFC_TEXT] [OUTPUT]

RFC_TEXT defaults to ../shared/rfc/rfc8448.txt relative to the repository
root; OUTPUT defaults to rfc8448.json next to this script ("-" = stdout).

Only the Python standard library is used.  The RFC text is paginated
(form feeds, page footers "Thomson ... [Page N]" and page headers
"RFC 8448 ... January 2019"); those lines are dropped before hex dumps are
joined, and every printed "(N octets)" count is checked against the bytes
actually collected.

Conventions:
  * all values are lowercase hex strings without separators;
  * handshake messages include the 4-byte handshake header, exactly as the
    RFC prints "construct a ... handshake message";
  * "*_record" values are complete TLS records (5-byte header + fragment),
    exactly as the RFC prints "complete record"; each is located by
    matching its printed plaintext "payload" against the message(s) it
    carries, so a mismatch aborts extraction.

Omissions / notes:
  * Nothing requested is omitted: every key of the required layout is
    printed in its section of RFC 8448.
  * "shared_secret" is the IKM of the {server} 'extract secret "handshake"'
    step (RFC 8448 never labels it "shared secret").
  * In Section 5 the server never creates an X25519 key (it answers the
    X25519 share with a HelloRetryRequest), so there is no
    server_x25519_* in "hello_retry"; the Section 5 trace contains no PSK /
    early-data step before the first ClientHello (only the client's X25519
    key pair) and no NewSessionTicket.
  * "hello_retry.hello_retry_request" is the first message the RFC labels
    "ServerHello" in Section 5 (the RFC notes that HRR uses the ServerHello
    message type); "hello_retry.server_hello" is the second one.
  * The Section 5 "client_hello_1_record" has legacy_record_version 0x0301,
    "client_hello_2_record" has 0x0303, exactly as printed.
  * Extra keys (not in the required layout) are added for convenience:
    *_finished_key (HMAC keys for Finished), finished verify_data,
    client_hello_record for Section 3, Section 3 NewSessionTicket (+ record,
    + derived resumption PSK), application-data and alert records.
"""

import json
import os
import re
import sys

# A printed value: hex dumps become bytes, anything else (e.g. 'salt:  0 ...') stays text.
Value = bytes | str

HEX_LINE = re.compile(r"^\s{6,}((?:[0-9a-f]{2} )*[0-9a-f]{2})\s*$")
STEP_LINE = re.compile(r"^   \{(client|server)\}\s+(.*?)\s*$")
VALUE_LINE = re.compile(r"^\s{3,}([A-Za-z][A-Za-z0-9 ()\-]*?)(?: \((\d+) octets\))?:  (.*?)\s*$")
SECTION_LINE = re.compile(r"^(\d+)\.  (\S.*?)\s*$")
HEX_RUN = re.compile(r"^(?:[0-9a-f]{2} )*[0-9a-f]{2}$")
PAGE_FOOTER = re.compile(r"^Thomson\s+Informational\s+\[Page \d+\]\s*$")
PAGE_HEADER = re.compile(r"^RFC 8448\s+TLS 1\.3 Traces\s+January 2019\s*$")


def clean_lines(text: str) -> list[str]:
    """Drop form feeds, page headers and page footers."""
    out: list[str] = []
    for line in text.split("\n"):
        line = line.replace("\f", "").rstrip("\r")
        if PAGE_FOOTER.match(line) or PAGE_HEADER.match(line):
            continue
        out.append(line)
    return out


class Step:
    def __init__(self, who: str, title: str) -> None:
        self.who = who
        self.title = title
        self.values: list[tuple[str, Value]] = []

    def get(self, label: str, nth: int = 0) -> Value:
        found = [v for (l, v) in self.values if l == label]
        if len(found) <= nth:
            raise KeyError("%r has no value %r" % (self.describe(), label))
        return found[nth]

    def get_bytes(self, label: str, nth: int = 0) -> bytes:
        v = self.get(label, nth)
        if not isinstance(v, bytes):
            raise ValueError("%s: %s is not hex" % (self.describe(), label))
        return v

    def describe(self) -> str:
        return "{%s} %s" % (self.who, self.title)


def parse(text: str) -> dict[int, list[Step]]:
    """Return {section_number: [Step, ...]}; section 2 values go into a
    pseudo-step with who == "preamble"."""
    lines = clean_lines(text)
    sections: dict[int, list[Step]] = {}
    current: Step | None = None
    steps: list[Step] | None = None
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        m = SECTION_LINE.match(line)
        if m:
            num = int(m.group(1))
            steps = sections.setdefault(num, [])
            current = Step("preamble", m.group(2))
            steps.append(current)
            i += 1
            continue
        if steps is None:
            i += 1
            continue
        m = STEP_LINE.match(line)
        if m:
            title = m.group(2)
            i += 1
            # A step title may wrap onto following indented lines.
            while (
                not title.endswith(":")
                and i < n
                and lines[i].strip()
                and not VALUE_LINE.match(lines[i])
                and not STEP_LINE.match(lines[i])
            ):
                title += " " + lines[i].strip()
                i += 1
            current = Step(m.group(1), title.rstrip(":").strip())
            steps.append(current)
            continue
        m = VALUE_LINE.match(line)
        if m and current is not None:
            label, count, rest = m.group(1), m.group(2), m.group(3)
            i += 1
            value: Value
            if rest == "(empty)":
                value = b""
            elif HEX_RUN.match(rest):
                parts = [rest]
                # Continuation lines; blank lines (page breaks) are skipped.
                while i < n:
                    if not lines[i].strip():
                        i += 1
                        continue
                    h = HEX_LINE.match(lines[i])
                    if not h:
                        break
                    parts.append(h.group(1))
                    i += 1
                value = bytes.fromhex(" ".join(parts))
            else:
                value = rest  # e.g. 'salt:  0 (all zero octets)'
            if count is not None and isinstance(value, bytes):
                if len(value) != int(count):
                    raise ValueError(
                        "%s / %s: printed %s octets, got %d"
                        % (current.describe(), label, count, len(value))
                    )
            current.values.append((label, value))
            continue
        i += 1
    return sections


class Section:
    def __init__(self, steps: list[Step], name: str) -> None:
        self.steps = steps
        self.name = name

    def find(self, who: str | None, title: str, nth: int = 0) -> Step:
        hits = [s for s in self.steps if (who is None or s.who == who) and s.title == title]
        if len(hits) <= nth:
            raise KeyError("%s: step {%s} %r #%d not found" % (self.name, who, title, nth))
        return hits[nth]

    def value(self, who: str | None, title: str, label: str, nth: int = 0) -> bytes:
        v = self.find(who, title, nth).get(label)
        if not isinstance(v, bytes):
            raise ValueError("%s: %s/%s is not hex" % (self.name, title, label))
        return v

    def message(self, who: str, name: str, nth: int = 0) -> bytes:
        article = "an" if name[0] in "AEIOU" else "a"
        title = "construct %s %s handshake message" % (article, name)
        msg = self.value(who, title, name, nth)
        body_len = int.from_bytes(msg[1:4], "big")
        if body_len != len(msg) - 4:
            raise ValueError("%s: %s length field mismatch" % (self.name, name))
        return msg

    def record_carrying(self, who: str, payload: bytes, kind: str = "handshake") -> bytes:
        """Complete record of the unique 'send <kind> record' step whose
        printed payload equals `payload`."""
        title = "send %s record" % kind
        hits = [
            s
            for s in self.steps
            if s.who == who and s.title == title and s.get("payload") == payload
        ]
        if len(hits) != 1:
            raise KeyError(
                "%s: %d {%s} %s steps carry the payload" % (self.name, len(hits), who, title)
            )
        rec = hits[0].get_bytes("complete record")
        if int.from_bytes(rec[3:5], "big") != len(rec) - 5:
            raise ValueError("%s: record length mismatch" % self.name)
        return rec

    def records(self, who: str, kind: str) -> list[Step]:
        title = "send %s record" % kind
        return [s for s in self.steps if s.who == who and s.title == title]


def h(b: bytes) -> str:
    return b.hex()


def extensions(msg: bytes, offset: int) -> list[tuple[int, bytes]]:
    """Parse an extensions block starting at `offset` (its 2-byte length)."""
    total = int.from_bytes(msg[offset : offset + 2], "big")
    pos, end = offset + 2, offset + 2 + total
    if end != len(msg):
        raise ValueError("extensions block does not end the message")
    out: list[tuple[int, bytes]] = []
    while pos < end:
        etype = int.from_bytes(msg[pos : pos + 2], "big")
        elen = int.from_bytes(msg[pos + 2 : pos + 4], "big")
        out.append((etype, msg[pos + 4 : pos + 4 + elen]))
        pos += 4 + elen
    if pos != end:
        raise ValueError("extension overrun")
    return out


def server_hello_extensions(msg: bytes) -> list[tuple[int, bytes]]:
    # type(1) len(3) version(2) random(32) sid_len(1) sid cipher(2) comp(1)
    sid_len = msg[4 + 2 + 32]
    return extensions(msg, 4 + 2 + 32 + 1 + sid_len + 2 + 1)


def key_schedule(sec: Section, out: dict[str, str]) -> None:
    out["early_secret"] = h(sec.value("server", 'extract secret "early"', "secret"))
    out["shared_secret"] = h(sec.value("server", 'extract secret "handshake"', "IKM"))
    out["handshake_secret"] = h(sec.value("server", 'extract secret "handshake"', "secret"))
    out["master_secret"] = h(sec.value("server", 'extract secret "master"', "secret"))
    for key, label in [
        ("client_handshake_traffic_secret", "tls13 c hs traffic"),
        ("server_handshake_traffic_secret", "tls13 s hs traffic"),
        ("client_application_traffic_secret", "tls13 c ap traffic"),
        ("server_application_traffic_secret", "tls13 s ap traffic"),
        ("exporter_master_secret", "tls13 exp master"),
    ]:
        out[key] = h(sec.value("server", 'derive secret "%s"' % label, "expanded"))
    out["resumption_master_secret"] = h(
        sec.value("client", 'derive secret "tls13 res master"', "expanded")
    )
    for prefix, who, title in [
        ("server_handshake", "server", "derive write traffic keys for handshake data"),
        ("client_handshake", "server", "derive read traffic keys for handshake data"),
        ("server_application", "server", "derive write traffic keys for application data"),
        ("client_application", "client", "derive write traffic keys for application data"),
    ]:
        out[prefix + "_key"] = h(sec.value(who, title, "key expanded"))
        out[prefix + "_iv"] = h(sec.value(who, title, "iv expanded"))
    for who in ("server", "client"):
        st = sec.find(who, 'calculate finished "tls13 finished"')
        out[who + "_finished_key"] = h(st.get_bytes("expanded"))
        out[who + "_finished_verify_data"] = h(st.get_bytes("finished"))


def server_flight(sec: Section, out: dict[str, str]) -> bytes:
    names = [
        ("encrypted_extensions", "EncryptedExtensions"),
        ("certificate", "Certificate"),
        ("certificate_verify", "CertificateVerify"),
        ("server_finished", "Finished"),
    ]
    flight = b""
    for key, name in names:
        msg = sec.message("server", name)
        out[key] = h(msg)
        flight += msg
    return flight


def tail_records(sec: Section, out: dict[str, str]) -> None:
    for who in ("client", "server"):
        for kind in ("application_data", "alert"):
            recs = sec.records(who, kind)
            if len(recs) == 1:
                out["%s_%s_payload" % (who, kind)] = h(recs[0].get_bytes("payload"))
                out["%s_%s_record" % (who, kind)] = h(recs[0].get_bytes("complete record"))


def extract(text: str) -> dict[str, dict[str, str]]:
    sections = parse(text)
    result: dict[str, dict[str, str]] = {}

    # ---- Section 2: server RSA key -------------------------------------
    pre = sections[2][0]
    result["server_rsa_key"] = {
        "modulus": h(pre.get_bytes("modulus (public)")),
        "public_exponent": h(pre.get_bytes("public exponent")),
        "private_exponent": h(pre.get_bytes("private exponent")),
        "prime1": h(pre.get_bytes("prime1")),
        "prime2": h(pre.get_bytes("prime2")),
        "exponent1": h(pre.get_bytes("exponent1")),
        "exponent2": h(pre.get_bytes("exponent2")),
        "coefficient": h(pre.get_bytes("coefficient")),
    }

    # ---- Section 3: simple 1-RTT ---------------------------------------
    s3 = Section(sections[3], "section 3")
    o: dict[str, str] = {}
    ch = s3.message("client", "ClientHello")
    sh = s3.message("server", "ServerHello")
    o["client_hello"] = h(ch)
    o["server_hello"] = h(sh)
    flight = server_flight(s3, o)
    cfin = s3.message("client", "Finished")
    o["client_finished"] = h(cfin)
    kp = "create an ephemeral x25519 key pair"
    o["client_x25519_private"] = h(s3.value("client", kp, "private key"))
    o["client_x25519_public"] = h(s3.value("client", kp, "public key"))
    o["server_x25519_private"] = h(s3.value("server", kp, "private key"))
    o["server_x25519_public"] = h(s3.value("server", kp, "public key"))
    key_schedule(s3, o)
    o["client_hello_record"] = h(s3.record_carrying("client", ch))
    o["server_hello_record"] = h(s3.record_carrying("server", sh))
    o["server_encrypted_record"] = h(s3.record_carrying("server", flight))
    o["client_finished_record"] = h(s3.record_carrying("client", cfin))
    nst = s3.message("server", "NewSessionTicket")
    o["new_session_ticket"] = h(nst)
    o["new_session_ticket_record"] = h(s3.record_carrying("server", nst))
    o["resumption_psk"] = h(
        s3.value("server", 'generate resumption secret "tls13 resumption"', "expanded")
    )
    tail_records(s3, o)
    result["simple_1rtt"] = o

    # ---- Section 5: HelloRetryRequest ----------------------------------
    s5 = Section(sections[5], "section 5")
    o = {}
    ch1 = s5.message("client", "ClientHello", 0)
    hrr = s5.message("server", "ServerHello", 0)
    ch2 = s5.message("client", "ClientHello", 1)
    sh = s5.message("server", "ServerHello", 1)
    o["client_hello_1"] = h(ch1)
    o["hello_retry_request"] = h(hrr)
    o["client_hello_2"] = h(ch2)
    cookies = [v for (t, v) in server_hello_extensions(hrr) if t == 44]
    if len(cookies) != 1:
        raise ValueError("HRR must carry exactly one cookie extension")
    clen = int.from_bytes(cookies[0][:2], "big")
    if clen != len(cookies[0]) - 2:
        raise ValueError("cookie length mismatch")
    o["cookie"] = h(cookies[0][2:])
    o["client_x25519_private_1"] = h(
        s5.value("client", "create an ephemeral x25519 key pair", "private key")
    )
    o["client_x25519_public_1"] = h(
        s5.value("client", "create an ephemeral x25519 key pair", "public key")
    )
    kp = "create an ephemeral P-256 key pair"
    o["client_p256_private"] = h(s5.value("client", kp, "private key"))
    o["client_p256_public"] = h(s5.value("client", kp, "public key"))
    o["server_p256_private"] = h(s5.value("server", kp, "private key"))
    o["server_p256_public"] = h(s5.value("server", kp, "public key"))
    o["server_hello"] = h(sh)
    flight = server_flight(s5, o)
    cfin = s5.message("client", "Finished")
    o["client_finished"] = h(cfin)
    key_schedule(s5, o)
    o["client_hello_1_record"] = h(s5.record_carrying("client", ch1))
    o["hello_retry_request_record"] = h(s5.record_carrying("server", hrr))
    o["client_hello_2_record"] = h(s5.record_carrying("client", ch2))
    o["server_hello_record"] = h(s5.record_carrying("server", sh))
    o["server_encrypted_record"] = h(s5.record_carrying("server", flight))
    o["client_finished_record"] = h(s5.record_carrying("client", cfin))
    tail_records(s5, o)
    result["hello_retry"] = o
    return result


def main(argv: list[str]) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    repo_root = os.path.dirname(os.path.dirname(here))
    src = (
        argv[1] if len(argv) > 1 else os.path.join(repo_root, "..", "shared", "rfc", "rfc8448.txt")
    )
    dst = argv[2] if len(argv) > 2 else os.path.join(here, "rfc8448.json")
    with open(src, encoding="ascii") as f:
        data = extract(f.read())
    text = json.dumps(data, indent=2) + "\n"
    if dst == "-":
        sys.stdout.write(text)
    else:
        with open(dst, "w", encoding="ascii") as f:
            f.write(text)


if __name__ == "__main__":
    main(sys.argv)
