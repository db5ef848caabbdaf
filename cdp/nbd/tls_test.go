package nbd

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPKI writes a CA and a server certificate for 127.0.0.1 into a
// directory laid out as qemu and libnbd expect (ca-cert.pem, …) and
// returns the directory, the server's TLS config and a client config
// trusting the CA.
func testPKI(t *testing.T) (dir string, server, client *tls.Config) {
	t.Helper()
	dir = t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hindsight test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePEM("ca-cert.pem", "CERTIFICATE", caDER)
	writePEM("server-cert.pem", "CERTIFICATE", der)
	writePEM("server-key.pem", "PRIVATE KEY", keyDER)
	// A client certificate, which qemu and libnbd present when the server asks.
	ckey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "backup-host"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cder, err := x509.CreateCertificate(rand.Reader, ctmpl, caCert, &ckey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ckeyDER, err := x509.MarshalPKCS8PrivateKey(ckey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM("client-cert.pem", "CERTIFICATE", cder)
	writePEM("client-key.pem", "PRIVATE KEY", ckeyDER)

	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
	client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	return dir, server, client
}

func TestTLS(t *testing.T) {
	pki, serverTLS, clientTLS := testPKI(t)
	d := newMemDisk(t, 8*mib)
	opt := exports(map[string]*memDisk{"disk": d})
	opt.TLS = serverTLS
	addr := startServer(t, opt)

	// qemu-io with x509 credentials.
	qemuTLS(t, true, pki, addr,
		"-c", "write -P 0x3c 0 1M", "-c", "read -P 0x3c 0 1M", "-c", "flush")
	if data, _ := d.snapshot(); !bytes.Equal(data[:mib], fill(mib, 0x3c)) {
		t.Fatal("TLS write not in the model")
	}

	// nbdinfo over nbds://.
	info := nbdinfo(t, "--json", "nbds://"+addr+"/disk?tls-certificates="+pki)
	if !info.TLS || len(info.Exports) != 1 || info.Exports[0].Size != 8*mib {
		t.Fatalf("nbdinfo over TLS: %+v", info)
	}

	// Plain clients are refused and change nothing.
	_, before := d.snapshot()
	out := qemuIO(t, false, "-f", "raw", "nbd://"+addr+"/disk", "-c", "write -P 0x01 0 4k")
	if !strings.Contains(out, "TLS") {
		t.Fatalf("plain qemu-io against a TLS server:\n%s", out)
	}
	runTool(t, false, needTool(t, "nbdinfo", libnbdPkg), "nbd://"+addr+"/disk")
	if _, after := d.snapshot(); len(after) != len(before) {
		t.Fatalf("plain clients reached the backend: %q", after[len(before):])
	}

	// A Go client doing the STARTTLS handshake itself.
	c := dialRaw(t, addr)
	c.option(optGo, goData("disk"))
	if _, typ, _ := c.optReply(); typ != repErrTLSReqd {
		t.Fatalf("GO before STARTTLS: %#x", typ)
	}
	c.startTLS(clientTLS)
	c.option(optStartTLS, nil)
	if _, typ, _ := c.optReply(); typ != repErrInvalid {
		t.Fatalf("second STARTTLS: %#x", typ)
	}
	c.structured()
	if typ, size, _ := c.goExport("disk"); typ != repAck || size != 8*mib {
		t.Fatalf("GO over TLS: %#x size %d", typ, size)
	}
	c.request(cmdWrite, cmdFlagFUA, 1, 4*mib, 4096, fill(4096, 0x4d))
	if r := c.reply(); r.errno != 0 || r.handle != 1 {
		t.Fatalf("write over TLS: %+v", r)
	}
	c.request(cmdRead, 0, 2, 4*mib, 4096, nil)
	if r := c.reply(); r.typ != replyTypeOffsetData || !bytes.Equal(r.payload[8:], fill(4096, 0x4d)) {
		t.Fatalf("read over TLS: type %d", r.typ)
	}
	c.request(cmdDisc, 0, 3, 0, 0, nil)
	c.expectClosed()

	// EXPORT_NAME without TLS cannot be refused politely: it closes.
	c = dialRaw(t, addr)
	c.option(optExportName, []byte("disk"))
	c.expectClosed()
}

// TestTLSClientCertificates: with client certificates required (serve-nbd
// --tls-client-ca), qemu-io and nbdinfo presenting one get in; a client
// without one, or with one from another CA, never reaches an export.
func TestTLSClientCertificates(t *testing.T) {
	pki, serverTLS, clientTLS := testPKI(t)
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	serverTLS.ClientCAs = x509.NewCertPool()
	serverTLS.ClientCAs.AppendCertsFromPEM(caPEM)
	serverTLS.ClientAuth = tls.RequireAndVerifyClientCert
	d := newMemDisk(t, 8*mib)
	opt := exports(map[string]*memDisk{"disk": d})
	opt.TLS = serverTLS
	addr := startServer(t, opt)

	qemuTLS(t, true, pki, addr,
		"-c", "write -P 0x5a 0 64k", "-c", "flush")
	if data, _ := d.snapshot(); !bytes.Equal(data[:64<<10], fill(64<<10, 0x5a)) {
		t.Fatal("write with a client certificate not in the model")
	}
	if info := nbdinfo(t, "--json", "nbds://"+addr+"/disk?tls-certificates="+pki); !info.TLS {
		t.Fatalf("nbdinfo with a client certificate: %+v", info)
	}

	// Without a client certificate: qemu's directory minus the client files.
	bare := t.TempDir()
	for _, f := range []string{"ca-cert.pem"} {
		b, _ := os.ReadFile(filepath.Join(pki, f))
		os.WriteFile(filepath.Join(bare, f), b, 0o600)
	}
	_, before := d.snapshot()
	qemuTLS(t, false, bare, addr,
		"-c", "write -P 0x01 0 4k")
	// A certificate from another CA.
	otherDir, _, _ := testPKI(t)
	qemuTLS(t, false, otherDir, addr,
		"-c", "write -P 0x02 0 4k")
	if _, after := d.snapshot(); len(after) != len(before) {
		t.Fatalf("clients without a valid certificate reached the backend: %q", after[len(before):])
	}
	// A Go client without a certificate fails the handshake.
	c := dialRaw(t, addr)
	c.option(optStartTLS, nil)
	if _, typ, _ := c.optReply(); typ != repAck {
		t.Fatalf("STARTTLS: %#x", typ)
	}
	tc := tls.Client(c.nc, clientTLS)
	if err := tc.Handshake(); err == nil {
		if _, err = tc.Read(make([]byte, 1)); err == nil {
			t.Fatal("a client without a certificate completed TLS")
		}
	}
}

// qemuTLS runs qemu-io with commands against export "disk" at addr over TLS,
// with the x509 credentials (and client certificate, if any) in dir.
func qemuTLS(t *testing.T, wantOK bool, dir, addr string, cmds ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	return qemuIO(t, wantOK, append([]string{
		"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + dir,
		"--image-opts", "driver=nbd,host=" + host + ",port=" + port + ",export=disk,tls-creds=tls0",
	}, cmds...)...)
}
