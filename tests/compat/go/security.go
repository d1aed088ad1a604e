package main

// FERRY_CLIENT_PROPS for franz-go: space-separated key=value settings with
// Kafka's (librdkafka's) names, turned into franz-go's own options:
//
//	security.protocol  PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
//	sasl.mechanism     PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (pkg/sasl/plain, pkg/sasl/scram)
//	sasl.username, sasl.password
//	ssl.ca.location    PEM file of the CA the broker's certificate is checked against
//
// Any other key is an error, so a setting is never silently ignored.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// securityOpts reads FERRY_CLIENT_PROPS; it returns a description for the log.
func securityOpts() ([]kgo.Opt, string, error) {
	props := map[string]string{}
	for _, kv := range strings.Fields(os.Getenv("FERRY_CLIENT_PROPS")) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, "", fmt.Errorf("FERRY_CLIENT_PROPS: %q is not key=value", kv)
		}
		switch k {
		case "security.protocol", "sasl.mechanism", "sasl.username", "sasl.password", "ssl.ca.location":
			props[k] = v
		default:
			return nil, "", fmt.Errorf("FERRY_CLIENT_PROPS: franz-go check does not know %q", k)
		}
	}
	protocol := strings.ToUpper(props["security.protocol"])
	if protocol == "" {
		protocol = "PLAINTEXT"
	}
	var opts []kgo.Opt
	switch protocol {
	case "PLAINTEXT", "SASL_PLAINTEXT":
	case "SSL", "SASL_SSL":
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if ca := props["ssl.ca.location"]; ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, "", fmt.Errorf("ssl.ca.location: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, "", fmt.Errorf("ssl.ca.location %s: no PEM certificate in it", ca)
			}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	default:
		return nil, "", fmt.Errorf("security.protocol %q is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL", protocol)
	}
	desc := protocol
	if strings.HasPrefix(protocol, "SASL_") {
		user, pass := props["sasl.username"], props["sasl.password"]
		var m sasl.Mechanism
		switch mech := strings.ToUpper(props["sasl.mechanism"]); mech {
		case "PLAIN":
			m = plain.Auth{User: user, Pass: pass}.AsMechanism()
		case "SCRAM-SHA-256":
			m = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
		case "SCRAM-SHA-512":
			m = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
		default:
			return nil, "", fmt.Errorf("sasl.mechanism %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", mech)
		}
		opts = append(opts, kgo.SASL(m))
		desc += " " + m.Name() + " as " + user
	}
	return opts, desc, nil
}

// checkConnects fails fast with the broker's own answer (an authentication
// error, a TLS failure) instead of a produce that retries until the deadline.
func checkConnects(ctx context.Context, common []kgo.Opt) {
	cl, err := kgo.NewClient(common...)
	if err != nil {
		fail("new client: %v", err)
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		fail("cannot reach or log in to the broker: %v", err)
	}
}

// saslRefusedMain (`franz-go-compat sasl-refused`): with FERRY_CLIENT_PROPS'
// password spoilt, the broker must refuse the login with
// SASL_AUTHENTICATION_FAILED, at once, not after retries or a timeout.
func saslRefusedMain() {
	topic = "-"
	props := strings.Fields(os.Getenv("FERRY_CLIENT_PROPS"))
	spoilt := false
	for i, kv := range props {
		if strings.HasPrefix(kv, "sasl.password=") {
			props[i] = kv + "-wrong"
			spoilt = true
		}
	}
	if !spoilt {
		fail("FERRY_CLIENT_PROPS has no sasl.password to spoil")
	}
	os.Setenv("FERRY_CLIENT_PROPS", strings.Join(props, " "))
	security, desc, err := securityOpts()
	if err != nil {
		fail("%v", err)
	}
	bootstrap := os.Getenv("FERRY_BOOTSTRAP")
	cl, err := kgo.NewClient(append(security, kgo.SeedBrokers(strings.Split(bootstrap, ",")...))...)
	if err != nil {
		fail("new client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = cl.Ping(ctx)
	if err == nil {
		fail("%s with a wrong password was accepted", desc)
	}
	if !errors.Is(err, kerr.SaslAuthenticationFailed) {
		fail("%s with a wrong password failed with %v, not SASL_AUTHENTICATION_FAILED", desc, err)
	}
	logf("%s with a wrong password refused: %v", desc, err)
}
