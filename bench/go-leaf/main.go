// Command go-leaf is the Go counterpart of bench/leaf-sign.ts: the same per-leaf work with the standard library
// (PEM decode, x509.ParseCertificateRequest, CheckSignature, checks equivalent to the agent's leaf policy,
// x509.CreateCertificate, pem.Encode) over the same CA and CSRs, one leaf after another on one goroutine.
//
//	GOTOOLCHAIN=local go build -o go-leaf . && GOMAXPROCS=1 ./go-leaf -dir DIR -seconds 10
package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

const (
	maxCsrBytes   = 8192
	trustDomain   = "cluster.local"
	ttl           = 24 * time.Hour
	clockSkew     = time.Minute
	minRSABits    = 2048
	maxRSABits    = 8192
	maxSpiffeID   = 2048
	serialBytes   = 16
	keyCertSign   = 1 << 5
	crlSign       = 1 << 6
	extRequestDup = "CSR requests extension %s more than once"
)

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	trustDomainRE       = regexp.MustCompile(`^[a-z0-9._-]+$`)
	segmentRE           = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

type issuer struct {
	cert     *x509.Certificate
	key      crypto.Signer
	chainPEM []string
}

func main() {
	dir := flag.String("dir", "", "fixture directory written by `leaf-sign.js prepare`")
	seconds := flag.Float64("seconds", 10, "measurement time")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: go-leaf -dir DIR [-seconds N]")
		os.Exit(2)
	}
	ca, csrs, err := load(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Warm-up, as the Node benchmark does.
	for i, until := 0, time.Now().Add(2*time.Second); time.Now().Before(until); i++ {
		if _, err := signLeaf(ca, csrs[i%len(csrs)], time.Now()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	leaves, size := 0, 0
	start := time.Now()
	until := start.Add(time.Duration(*seconds * float64(time.Second)))
	for time.Now().Before(until) {
		for j := 0; j < 100; j++ {
			chain, err := signLeaf(ca, csrs[leaves%len(csrs)], time.Now())
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			size += len(chain[0])
			leaves++
		}
	}
	elapsed := time.Since(start).Seconds()
	fmt.Printf("leaves %d seconds %.2f avg_pem_bytes %d\n", leaves, elapsed, size/leaves)
	fmt.Printf("leaves/s %d\n", int(float64(leaves)/elapsed+0.5))
}

func load(dir string) (*issuer, [][]byte, error) {
	// The files prepareFixtures (bench/fixtures.ts) writes, in this order.
	var files [4][]byte
	for i, name := range []string{"ca-cert.pem", "root-cert.pem", "ca-key.pem", "csrs.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, nil, err
		}
		files[i] = b
	}
	certPEM, rootPEM, keyPEM, csrFile := files[0], files[1], files[2], files[3]
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, nil, errors.New("ca-cert.pem: no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, err
	}
	block, _ = pem.Decode(keyPEM)
	if block == nil {
		return nil, nil, errors.New("ca-key.pem: no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("ca-key.pem: not a signing key")
	}
	var csrs [][]byte
	for rest := csrFile; ; {
		i := bytes.Index(rest, []byte("-----END CERTIFICATE REQUEST-----\n"))
		if i < 0 {
			break
		}
		end := i + len("-----END CERTIFICATE REQUEST-----\n")
		csrs = append(csrs, rest[:end])
		rest = rest[end:]
	}
	if len(csrs) == 0 {
		return nil, nil, errors.New("csrs.pem: no CSRs")
	}
	return &issuer{cert: cert, key: signer, chainPEM: []string{string(certPEM), string(rootPEM)}}, csrs, nil
}

// signLeaf mirrors src/signing/leaf-signer.ts + leaf-policy.ts: it returns the leaf PEM followed by the chain.
func signLeaf(ca *issuer, csrPEM []byte, now time.Time) ([]string, error) {
	if len(csrPEM) > maxCsrBytes {
		return nil, errors.New("csr_too_large")
	}
	block, rest := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("csr_malformed: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr_malformed: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return nil, errors.New("key_too_weak/key_unsupported")
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, errors.New("key_unsupported")
		}
	default:
		return nil, errors.New("key_unsupported")
	}
	switch csr.SignatureAlgorithm {
	case x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512,
		x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
		x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
	default:
		return nil, errors.New("csr_signature: algorithm not supported")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr_signature: %w", err)
	}
	if err := refuseCaRequest(csr); err != nil {
		return nil, err
	}
	if len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses) > 0 {
		return nil, errors.New("san_forbidden_type")
	}
	if len(csr.URIs) == 0 {
		return nil, errors.New("no_identity")
	}
	for _, u := range csr.URIs {
		td, ok := spiffeTrustDomain(u.String())
		if !ok {
			return nil, errors.New("san_not_spiffe")
		}
		if td != trustDomain {
			return nil, errors.New("san_wrong_trust_domain")
		}
	}

	notBefore := now.Add(-clockSkew).Truncate(time.Second)
	if notBefore.Before(ca.cert.NotBefore) {
		notBefore = ca.cert.NotBefore
	}
	notAfter := now.Add(ttl).Truncate(time.Second)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	serial := make([]byte, serialBytes)
	if _, err := rand.Read(serial); err != nil {
		return nil, err
	}
	serial[0] = serial[0]&0x7f | 0x40
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(csr.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, err
	}
	ski := sha1.Sum(spki.PublicKey.Bytes)
	template := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(serial),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  csr.URIs, // empty subject: crypto/x509 marks the SAN extension critical
		SubjectKeyId:          ski[:],
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
		return nil, err
	}
	return append([]string{out.String()}, ca.chainPEM...), nil
}

func refuseCaRequest(csr *x509.CertificateRequest) error {
	seen := map[string]bool{}
	for _, ext := range csr.Extensions {
		id := ext.Id.String()
		if seen[id] {
			return fmt.Errorf("csr_malformed: "+extRequestDup, id)
		}
		seen[id] = true
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil {
				return fmt.Errorf("csr_malformed: %w", err)
			}
			if bc.IsCA {
				return errors.New("ca_requested")
			}
		case ext.Id.Equal(oidKeyUsage):
			var bits asn1.BitString
			if _, err := asn1.Unmarshal(ext.Value, &bits); err != nil {
				return fmt.Errorf("csr_malformed: %w", err)
			}
			if bits.At(5) != 0 || bits.At(6) != 0 {
				return errors.New("ca_requested")
			}
		}
	}
	return nil
}

// spiffeTrustDomain matches leaf-policy.ts: spiffe://<td>/<segments>, lower-case trust domain, no empty/dot segments.
func spiffeTrustDomain(uri string) (string, bool) {
	const prefix = "spiffe://"
	if !strings.HasPrefix(uri, prefix) || len(uri) > maxSpiffeID {
		return "", false
	}
	rest := uri[len(prefix):]
	slash := strings.IndexByte(rest, '/')
	if slash <= 0 {
		return "", false
	}
	td := rest[:slash]
	if !trustDomainRE.MatchString(td) {
		return "", false
	}
	for _, s := range strings.Split(rest[slash+1:], "/") {
		if !segmentRE.MatchString(s) || s == "." || s == ".." {
			return "", false
		}
	}
	return td, true
}
