// loadgen publishes messages one at a time and waits for each one's
// acknowledgement (publish-with-ack), with C concurrent publishers, against
// Kafka-protocol brokers (franz-go), NATS JetStream, RabbitMQ quorum queues
// and Redis Streams. It prints one JSON object with throughput and latency.
//
// It is the side-by-side benchmark's driver for the acknowledge-every-message
// workloads that Kafka's own performance tools cannot express.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

type publisher interface {
	publish(ctx context.Context, payload []byte) error
	close()
}

type result struct {
	System      string  `json:"system"`
	Addr        string  `json:"addr"`
	Target      string  `json:"target"`
	Publishers  int     `json:"publishers"`
	RecordBytes int     `json:"record_bytes"`
	Requested   int64   `json:"requested"`
	Acked       int64   `json:"acked"`
	Errors      int64   `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	Seconds     float64 `json:"seconds"`
	PerSec      float64 `json:"records_per_sec"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	P999Ms      float64 `json:"p999_ms"`
	MaxMs       float64 `json:"max_ms"`
	TimedOut    bool    `json:"timed_out"`
}

func main() {
	system := flag.String("system", "kafka", "kafka | nats | rabbitmq | redis")
	addr := flag.String("addr", "127.0.0.1:9092", "server address (host:port)")
	target := flag.String("target", "loadgen", "topic / stream / queue / stream key")
	n := flag.Int64("n", 20000, "messages in total")
	size := flag.Int("size", 100, "message bytes")
	conc := flag.Int("publishers", 1, "concurrent publishers, each with its own connection")
	limit := flag.Duration("limit", 60*time.Second, "stop after this long even if not done")
	flag.Parse()

	ctx := context.Background()
	if err := setup(ctx, *system, *addr, *target); err != nil {
		fmt.Fprintf(os.Stderr, "setup: %v\n", err)
		os.Exit(2)
	}
	pubs := make([]publisher, *conc)
	for i := range pubs {
		p, err := connect(ctx, *system, *addr, *target)
		if err != nil {
			fmt.Fprintf(os.Stderr, "connect: %v\n", err)
			os.Exit(2)
		}
		pubs[i] = p
	}
	payload := make([]byte, *size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	var next, acked, errs atomic.Int64
	var firstErr atomic.Value
	lats := make([][]time.Duration, *conc)
	deadline := time.Now().Add(*limit)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range pubs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			own := make([]time.Duration, 0, *n/int64(*conc)+1)
			for next.Add(1) <= *n {
				if time.Now().After(deadline) {
					break
				}
				t0 := time.Now()
				if err := pubs[i].publish(ctx, payload); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				own = append(own, time.Since(t0))
				acked.Add(1)
			}
			lats[i] = own
		}(i)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	for _, p := range pubs {
		p.close()
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	q := func(f float64) float64 {
		if len(all) == 0 {
			return 0
		}
		i := int(f * float64(len(all)))
		if i >= len(all) {
			i = len(all) - 1
		}
		return float64(all[i].Microseconds()) / 1000
	}
	r := result{System: *system, Addr: *addr, Target: *target, Publishers: *conc, RecordBytes: *size,
		Requested: *n, Acked: acked.Load(), Errors: errs.Load(), Seconds: secs,
		PerSec: float64(acked.Load()) / secs, P50Ms: q(0.50), P99Ms: q(0.99), P999Ms: q(0.999), MaxMs: q(1.0),
		TimedOut: acked.Load()+errs.Load() < *n}
	if v, ok := firstErr.Load().(string); ok {
		r.FirstError = v
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}

// setup creates the topic, stream or queue once, before the publishers connect.
func setup(ctx context.Context, system, addr, target string) error {
	switch system {
	case "kafka":
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
		if err != nil {
			return err
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		resp, err := adm.CreateTopics(ctx, 1, 1, nil, target)
		if err != nil {
			return err
		}
		for _, t := range resp {
			if t.Err != nil && !errors.Is(t.Err, kerr.TopicAlreadyExists) {
				return t.Err
			}
		}
		return nil
	case "nats":
		nc, err := nats.Connect("nats://" + addr)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: target, Subjects: []string{target}, Storage: jetstream.FileStorage, Replicas: 1})
		return err
	case "rabbitmq":
		conn, err := amqp.Dial("amqp://guest:guest@" + addr + "/")
		if err != nil {
			return err
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		_, err = ch.QueueDeclare(target, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		return err
	case "redis":
		rc := redis.NewClient(&redis.Options{Addr: addr})
		defer rc.Close()
		return rc.Del(ctx, target).Err()
	}
	return fmt.Errorf("unknown system %q", system)
}

func connect(ctx context.Context, system, addr, target string) (publisher, error) {
	switch system {
	case "kafka":
		// acks=all, one record in flight, no linger: every record waits for its own answer.
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(target),
			kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DisableIdempotentWrite(), kgo.ProducerLinger(0),
			kgo.MaxProduceRequestsInflightPerBroker(1))
		if err != nil {
			return nil, err
		}
		return &kafkaPub{cl}, nil
	case "nats":
		nc, err := nats.Connect("nats://" + addr)
		if err != nil {
			return nil, err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, err
		}
		return &natsPub{nc, js, target}, nil
	case "rabbitmq":
		conn, err := amqp.Dial("amqp://guest:guest@" + addr + "/")
		if err != nil {
			return nil, err
		}
		ch, err := conn.Channel()
		if err != nil {
			return nil, err
		}
		if err := ch.Confirm(false); err != nil {
			return nil, err
		}
		return &rabbitPub{conn, ch, target}, nil
	case "redis":
		rc := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1})
		return &redisPub{rc, target}, nil
	}
	return nil, fmt.Errorf("unknown system %q", system)
}

type kafkaPub struct{ cl *kgo.Client }

func (p *kafkaPub) publish(ctx context.Context, b []byte) error {
	return p.cl.ProduceSync(ctx, &kgo.Record{Value: b}).FirstErr()
}
func (p *kafkaPub) close() { p.cl.Close() }

type natsPub struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	target string
}

func (p *natsPub) publish(ctx context.Context, b []byte) error {
	_, err := p.js.Publish(ctx, p.target, b)
	return err
}
func (p *natsPub) close() { p.nc.Close() }

type rabbitPub struct {
	conn   *amqp.Connection
	ch     *amqp.Channel
	target string
}

func (p *rabbitPub) publish(ctx context.Context, b []byte) error {
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, "", p.target, false, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, Body: b})
	if err != nil {
		return err
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("nacked")
	}
	return nil
}
func (p *rabbitPub) close() { p.ch.Close(); p.conn.Close() }

type redisPub struct {
	rc     *redis.Client
	target string
}

func (p *redisPub) publish(ctx context.Context, b []byte) error {
	return p.rc.XAdd(ctx, &redis.XAddArgs{Stream: p.target, Values: []any{"v", b}}).Err()
}
func (p *redisPub) close() { p.rc.Close() }
