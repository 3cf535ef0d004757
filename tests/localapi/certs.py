#!/usr/bin/python3
"""certs.py - test certificates for the local API, made with the `openssl` CLI.

    from certs import make_certs
    c = make_certs(tmpdir)
    c.ca                      # PEM of the test CA (give it to clients as ca_file)
    c.valid                   # Pair(cert, key): SAN IP:127.0.0.1, DNS:localhost, signed by c.ca
    c.wrong_host              # Pair: SAN DNS:wrong-host.invalid only, signed by c.ca
    c.expired                 # Pair: loopback SANs, signed by c.ca, expired in 2020
    c.unknown_ca              # Pair: loopback SANs, signed by another CA (c.other_ca)
    c.other_ca                # PEM of that other CA (no client is told about it)

A Pair is a (cert, key) named tuple of paths, so `LocalAPI.start(tmp, tls=c.valid)`
or `ciapi.py --tls *c.valid` work directly.  Keys are EC P-256 (fast to make).

From the shell: `certs.py DIR` makes them in DIR and prints the paths as JSON.
"""

import collections
import json
import os
import subprocess
import sys
import time

Pair = collections.namedtuple("Pair", "cert key")
CertSet = collections.namedtuple(
    "CertSet", "dir ca ca_key valid wrong_host expired unknown_ca other_ca")

OPENSSL = "openssl"

# One configuration file serves every step; each extension section describes
# one kind of certificate.  Nothing is read from the system's openssl.cnf.
CONFIG = """\
[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = unused

[ ca ]
default_ca = test_ca
[ test_ca ]
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ policy_any ]
commonName = supplied

[ ext_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ ext_loopback ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1, DNS:localhost

[ ext_wrong_host ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:wrong-host.invalid
"""


def _run(args, cwd):
    """Run openssl quietly; raise with its stderr on failure."""
    env = dict(os.environ)
    env.pop("OPENSSL_CONF", None)
    proc = subprocess.run([OPENSSL] + args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError("openssl %s failed (%d): %s"
                           % (" ".join(args), proc.returncode,
                              proc.stderr.decode("utf-8", "replace")))
    return proc.stdout


def _ec_key(path, cwd):
    _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-out", path], cwd)
    os.chmod(os.path.join(cwd, path), 0o600)


def _make_ca(name, cn, cwd):
    """A self-signed CA in its own folder (name/), ready for `openssl ca`."""
    ca_dir = os.path.join(cwd, name)
    os.makedirs(os.path.join(ca_dir, "issued"), exist_ok=True)
    with open(os.path.join(ca_dir, "index.txt"), "w"):
        pass
    with open(os.path.join(ca_dir, "serial"), "w") as f:
        # A random first serial: certificates of different runs never share one.
        f.write("%016X\n" % ((int.from_bytes(os.urandom(8), "big") >> 2) | (1 << 60)))
    conf = os.path.join(ca_dir, "openssl.cnf")
    with open(conf, "w") as f:
        f.write(CONFIG.format(dir=ca_dir))
    key = os.path.join(ca_dir, "ca.key")
    cert = os.path.join(cwd, name + ".pem")
    _ec_key(key, cwd)
    csr = os.path.join(ca_dir, "ca.csr")
    _run(["req", "-config", conf, "-new", "-key", key, "-out", csr, "-subj", "/CN=" + cn], cwd)
    # `ca -selfsign` rather than `req -x509`, to back-date notBefore by a day.
    _run(["ca", "-batch", "-config", conf, "-selfsign", "-keyfile", key, "-in", csr,
          "-out", cert, "-notext", "-extensions", "ext_ca",
          "-startdate", _utc_days_ago(1), "-days", "3650"], cwd)
    return conf, cert, key


def _issue(conf, ca_cert, ca_key, name, extensions, cwd, dates=None):
    """A server certificate `name`.pem / `name`.key signed by the given CA."""
    key = os.path.join(cwd, name + ".key")
    csr = os.path.join(cwd, name + ".csr")
    cert = os.path.join(cwd, name + ".pem")
    _ec_key(key, cwd)
    _run(["req", "-config", conf, "-new", "-key", key, "-out", csr,
          "-subj", "/CN=" + name], cwd)
    args = ["ca", "-batch", "-config", conf, "-cert", ca_cert, "-keyfile", ca_key,
            "-in", csr, "-out", cert, "-notext", "-extensions", extensions]
    if dates:
        args += ["-startdate", dates[0], "-enddate", dates[1]]
    else:
        # Valid from a day ago so that a client clock slightly behind still accepts it.
        args += ["-startdate", _utc_days_ago(1), "-days", "825"]
    _run(args, cwd)
    os.unlink(csr)
    return Pair(cert, key)


def _utc_days_ago(days):
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - days * 86400))


def make_certs(directory):
    """Make every test certificate in `directory` (created if needed)."""
    directory = os.path.abspath(str(directory))
    os.makedirs(directory, exist_ok=True)
    conf, ca, ca_key = _make_ca("ca", "insightfs test CA", directory)
    valid = _issue(conf, ca, ca_key, "valid", "ext_loopback", directory)
    wrong = _issue(conf, ca, ca_key, "wrong_host", "ext_wrong_host", directory)
    expired = _issue(conf, ca, ca_key, "expired", "ext_loopback", directory,
                     dates=("20200101000000Z", "20200102000000Z"))
    other_conf, other_ca, other_key = _make_ca("other_ca", "unknown test CA", directory)
    unknown = _issue(other_conf, other_ca, other_key, "unknown_ca", "ext_loopback", directory)
    return CertSet(directory, ca, ca_key, valid, wrong, expired, unknown, other_ca)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: certs.py DIR\n")
        return 2
    certs = make_certs(argv[1])
    out = {k: (v._asdict() if isinstance(v, Pair) else v) for k, v in certs._asdict().items()}
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
