// Ferry compatibility check: franz-go (github.com/twmb/franz-go/pkg/kgo).
//
// Produces 10,000 records (zstd, acks=all, idempotence disabled) to
// partition 0 of a fresh topic (auto-created on first produce), then reads
// them back from offset 0 with ConsumePartitions (no consumer group) and
// checks offset, key and value of every record.
//
// `franz-go-compat group rebalance|kill` runs the consumer-group check
// instead (group.go); `franz-go-compat sasl-refused` checks that a wrong SASL
// password is refused (security.go).
//
// Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60),
// FERRY_CLIENT_PROPS (TLS and SASL settings with Kafka's names, e.g.
// security.protocol=SASL_SSL sasl.mechanism=SCRAM-SHA-512 sasl.username=u
// sasl.password=p ssl.ca.location=ca.pem; see security.go), FERRY_COMPAT_DEBUG=1 for franz-go debug logging, FERRY_CONTROL_DIR (set by
// run.sh; needed for "group kill").
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	client = "franz-go"
	n      = 10000
)

var (
	start = time.Now()
	topic string
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL [%s] topic=%s: %s\n", client, topic, fmt.Sprintf(format, args...))
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Printf("[%s %6.2fs] %s\n", client, time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func franzVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/twmb/franz-go" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "group" {
		groupMain(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "sasl-refused" {
		saslRefusedMain()
		return
	}
	bootstrap := os.Getenv("FERRY_BOOTSTRAP")
	if bootstrap == "" {
		bootstrap = "127.0.0.1:9092"
	}
	timeout := 60 * time.Second
	if s := os.Getenv("FERRY_COMPAT_TIMEOUT"); s != "" {
		secs, err := strconv.Atoi(s)
		if err != nil {
			fail("bad FERRY_COMPAT_TIMEOUT %q", s)
		}
		timeout = time.Duration(secs) * time.Second
	}
	var rnd [5]byte
	_, _ = rand.Read(rnd[:])
	topic = "compat-" + client + "-" + hex.EncodeToString(rnd[:])

	// Hard backstop in case a client call ignores its context.
	time.AfterFunc(timeout+5*time.Second, func() { fail("hard timeout after %s", timeout) })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	common := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(bootstrap, ",")...),
		kgo.ClientID("ferry-compat-franz-go"),
	}
	if os.Getenv("FERRY_COMPAT_DEBUG") != "" {
		common = append(common, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelDebug, nil)))
	}
	security, desc, err := securityOpts()
	if err != nil {
		fail("%v", err)
	}
	common = append(common, security...)
	logf("franz-go %s, bootstrap %s (%s), topic %s", franzVersion(), bootstrap, desc, topic)
	if len(security) > 0 {
		checkConnects(ctx, common)
	}

	produce(ctx, common)
	consume(ctx, common)
	logf("done")
	fmt.Printf("OK [%s] %d records round-tripped in %.2fs\n", client, n, time.Since(start).Seconds())
}

func produce(ctx context.Context, common []kgo.Opt) {
	opts := append([]kgo.Opt{
		kgo.DisableIdempotentWrite(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.ZstdCompression()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.AllowAutoTopicCreation(),
		kgo.ProducerLinger(5 * time.Millisecond),
	}, common...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		fail("new producer client: %v", err)
	}
	defer cl.Close()

	var (
		mu      sync.Mutex
		errs    []string
		offsets = make([]int64, n)
	)
	for i := range offsets {
		offsets[i] = -1
	}
	for i := 0; i < n; i++ {
		idx := i
		r := &kgo.Record{
			Topic:     topic,
			Partition: 0,
			Key:       []byte(fmt.Sprintf("k%d", i)),
			Value:     []byte(fmt.Sprintf("%s-%d", client, i)),
		}
		cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if len(errs) < 5 {
					errs = append(errs, fmt.Sprintf("record #%d: %v", idx, err))
				}
				return
			}
			if r.Partition != 0 {
				errs = append(errs, fmt.Sprintf("record #%d: went to partition %d", idx, r.Partition))
			}
			offsets[idx] = r.Offset
		})
	}
	if err := cl.Flush(ctx); err != nil {
		fail("flush: %v (first record errors: %v)", err, errs)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		fail("produce errors: %s", strings.Join(errs, "; "))
	}
	for i, off := range offsets {
		if off != int64(i) {
			fail("record #%d acknowledged at offset %d, expected %d", i, off, i)
		}
	}
	logf("produced %d records (zstd, acks=all, no idempotence), offsets 0..%d acknowledged", n, n-1)
}

func consume(ctx context.Context, common []kgo.Opt) {
	opts := append([]kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			topic: {0: kgo.NewOffset().At(0)},
		}),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}, common...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		fail("new consumer client: %v", err)
	}
	defer cl.Close()

	got := 0
	for got < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			fail("timed out while consuming: got %d of %d records", got, n)
		}
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				fail("timed out while consuming: got %d of %d records", got, n)
			}
			fail("fetch error on %s/%d after %d records: %v", fe.Topic, fe.Partition, got, fe.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			i := got
			if r.Topic != topic || r.Partition != 0 || r.Offset != int64(i) {
				fail("record #%d: %s/%d offset %d, expected %s/0 offset %d", i, r.Topic, r.Partition, r.Offset, topic, i)
			}
			if want := fmt.Sprintf("k%d", i); string(r.Key) != want {
				fail("record #%d: key %q, expected %q", i, r.Key, want)
			}
			if want := fmt.Sprintf("%s-%d", client, i); string(r.Value) != want {
				fail("record #%d: value %q, expected %q", i, r.Value, want)
			}
			got++
			if got > n {
				fail("more records than produced")
			}
		})
	}
	// Nothing beyond n may show up.
	ectx, ecancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer ecancel()
	extra := cl.PollFetches(ectx)
	if c := extra.NumRecords(); c > 0 {
		fail("got %d unexpected extra records", c)
	}
	logf("consumed %d records from offset 0, all offsets/keys/values match", got)
}
