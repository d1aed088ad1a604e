// Consumer-group check: franz-go-compat group rebalance|kill
//
// Creates a 6-partition topic (CreateTopics), produces 6,000 keyed records
// (acks=all, idempotence disabled, the default key-hash partitioner), then
// consumes them with a group of three kgo group clients (goroutines) using
// the default cooperative-sticky balancer, BlockRebalanceOnPoll and manual
// commits: each polls a batch, processes it (every value is recorded; a short
// sleep per record keeps the stream going long enough), commits the batch
// synchronously, then allows rebalances again (at-least-once).
//
//   - "rebalance": once 1,500 distinct values are processed, member m1 closes
//     (LeaveGroup) and a new member m4 joins; m4 must process records.
//   - "kill": once 2,000 distinct values are processed and every partition has
//     an acknowledged commit, the program asks the runner (run.sh, via
//     $FERRY_CONTROL_DIR) to SIGKILL and restart the broker and keeps
//     consuming. Right after the restart the group's committed offsets must be
//     at least the commits acknowledged before the kill, and no record below
//     such a commit may be processed again after the restart.
//
// Both: every value processed at least once, and the committed offsets equal
// the log end offsets.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	gN          = 6000
	gPartitions = 6
	gMaxBatch   = 100
	// Per record: three members process ~750 records/s in total, so the
	// stream lasts ~8 s plus rebalances.
	gProcessDelay = 4 * time.Millisecond
	gLeaveAt      = 1500
	gKillAt       = 2000
	// The broker (like Kafka) refuses session timeouts below
	// group.min.session.timeout.ms (6000 ms by default).
	gSessionTimeout    = 10 * time.Second
	gHeartbeatInterval = 1 * time.Second
	gRebalanceTimeout  = 30 * time.Second
)

type ledger struct {
	mu            sync.Mutex
	prodPartition [gN]int32
	prodOffset    [gN]int64
	leo           [gPartitions]int64
	counts        [gN]int
	unique        int
	redelivered   int
	perMember     map[string]int
	acked         [gPartitions]int64
	commitOK      int
	commitFailed  int
	killPhase     string // before | during | after
	floor         [gPartitions]int64
	firstAfter    [gPartitions]int64
	violations    []string
}

type groupRun struct {
	mode      string
	group     string
	bootstrap []string
	deadline  time.Time
	common    []kgo.Opt
	admin     *kgo.Client
	l         ledger
	members   []*member
	phase     string
	logMu     sync.Mutex
}

func (g *groupRun) logf(format string, args ...any) {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	logf(format, args...)
}

func (g *groupRun) failf(format string, args ...any) {
	fail("group=%s: %s", g.group, fmt.Sprintf(format, args...))
}

func (g *groupRun) progress() string {
	g.l.mu.Lock()
	defer g.l.mu.Unlock()
	var missing []int
	for i := 0; i < gN && len(missing) < 5; i++ {
		if g.l.counts[i] == 0 {
			missing = append(missing, i)
		}
	}
	return fmt.Sprintf("%d/%d values processed, missing e.g. %v, acked commits %v, log end %v, per member %v",
		g.l.unique, gN, missing, g.l.acked, g.l.leo, g.l.perMember)
}

func groupMain(args []string) {
	if len(args) != 1 || (args[0] != "rebalance" && args[0] != "kill") {
		fmt.Fprintln(os.Stderr, "usage: franz-go-compat group rebalance|kill")
		os.Exit(2)
	}
	g := &groupRun{mode: args[0]}
	bootstrap := os.Getenv("FERRY_BOOTSTRAP")
	if bootstrap == "" {
		bootstrap = "127.0.0.1:9092"
	}
	g.bootstrap = strings.Split(bootstrap, ",")
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
	topic = "compat-" + client + "-g" + g.mode[:1] + "-" + hex.EncodeToString(rnd[:])
	g.group = topic + "-g"
	g.deadline = start.Add(timeout)
	g.l.perMember = map[string]int{}
	g.l.killPhase = "before"
	for i := range g.l.prodPartition {
		g.l.prodPartition[i] = -1
	}
	for p := range g.l.firstAfter {
		g.l.firstAfter[p] = -1
	}
	time.AfterFunc(timeout+5*time.Second, func() {
		g.failf("hard timeout after %s (phase: %s; %s)", timeout, g.phase, g.progress())
	})

	g.common = []kgo.Opt{kgo.SeedBrokers(g.bootstrap...)}
	if os.Getenv("FERRY_COMPAT_DEBUG") != "" {
		g.common = append(g.common, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelDebug, nil)))
	} else {
		g.common = append(g.common, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)))
	}
	admin, err := kgo.NewClient(append([]kgo.Opt{kgo.ClientID("ferry-compat-franz-go-admin")}, g.common...)...)
	if err != nil {
		fail("new admin client: %v", err)
	}
	g.admin = admin
	g.logf("franz-go %s, bootstrap %s, mode %s, topic %s", franzVersion(), bootstrap, g.mode, topic)
	g.run()
	fmt.Printf("OK [%s] group %s: %d records processed at least once, commits at log end, in %.2fs\n",
		client, g.mode, gN, time.Since(start).Seconds())
	os.Exit(0)
}

func (g *groupRun) ctx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func (g *groupRun) run() {
	g.phase = "creating topic"
	g.createTopic()
	g.phase = "producing"
	g.produce()
	if end := g.endOffsets(); end != g.l.leo {
		g.failf("log end offsets %v differ from acknowledged counts %v", end, g.l.leo)
	}

	g.phase = "consuming with m1, m2, m3"
	for _, name := range []string{"m1", "m2", "m3"} {
		g.startMember(name)
	}
	if g.mode == "rebalance" {
		g.waitUntil(fmt.Sprintf("%d processed values", gLeaveAt), func() bool { return g.uniqueNow() >= gLeaveAt })
		g.phase = "m1 leaving"
		g.logf("%d values processed; m1 leaves the group (close)", g.uniqueNow())
		g.members[0].stopAndWait(g)
		g.l.mu.Lock()
		n1 := g.l.perMember["m1"]
		g.l.mu.Unlock()
		g.logf("m1 closed after %d records; m4 joins", n1)
		g.phase = "consuming with m2, m3, m4"
		g.startMember("m4")
	} else {
		g.waitUntil(fmt.Sprintf("%d processed values and a commit on every partition", gKillAt), func() bool {
			g.l.mu.Lock()
			defer g.l.mu.Unlock()
			return g.l.unique >= gKillAt && slices.Min(g.l.acked[:]) > 0
		})
		g.phase = "broker kill/restart"
		g.requestKill()
		g.phase = "checking committed offsets after the restart"
		got, err := g.committedRetry()
		if err != nil {
			g.failf("could not fetch committed offsets after the restart: %v", err)
		}
		var lost []string
		for p := 0; p < gPartitions; p++ {
			if got[p] < g.l.floor[p] {
				lost = append(lost, fmt.Sprintf("%d: now %d, acknowledged %d", p, got[p], g.l.floor[p]))
			}
		}
		if len(lost) > 0 {
			g.failf("after the restart the group's committed offsets %v are below commits the broker acknowledged "+
				"before it was killed %v: %v", got, g.l.floor, lost)
		}
		g.logf("committed offsets right after the restart: %v (>= acknowledged before the kill)", got)
		g.phase = "consuming after the restart"
	}

	g.waitUntil(fmt.Sprintf("all %d values processed", gN), func() bool { return g.uniqueNow() >= gN })
	g.l.mu.Lock()
	red := g.l.redelivered
	g.l.mu.Unlock()
	g.logf("all %d values processed (%d re-deliveries); waiting for final commits", gN, red)
	g.phase = "waiting for committed == log end"
	last := ""
	for {
		c, err := g.committed()
		if err == nil && c == g.l.leo {
			break
		}
		last = fmt.Sprint(c)
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(g.deadline) {
			g.failf("committed offsets %s never reached the log end offsets %v", last, g.l.leo)
		}
		g.checkMembers()
		time.Sleep(200 * time.Millisecond)
	}

	g.phase = "closing members"
	for _, m := range g.members {
		m.stopAndWait(g)
	}
	fin, err := g.committed()
	if err != nil || fin != g.l.leo {
		g.failf("after closing the members the committed offsets are %v (err %v), log end %v", fin, err, g.l.leo)
	}
	g.l.mu.Lock()
	defer g.l.mu.Unlock()
	g.logf("committed offsets == log end offsets %v (commits: %d acknowledged, %d failed and retried)",
		g.l.leo, g.l.commitOK, g.l.commitFailed)
	for i := 0; i < gN; i++ {
		if g.l.counts[i] == 0 {
			g.failf("value #%d never processed", i)
		}
	}
	if g.mode == "rebalance" {
		if g.l.perMember["m4"] == 0 {
			g.failf("new member m4 never processed a record (per member %v)", g.l.perMember)
		}
	} else {
		if len(g.l.violations) > 0 {
			g.failf("%d records below a commit acknowledged before the restart were processed again after it "+
				"(member partition/offset < acknowledged commit): %v", len(g.l.violations),
				g.l.violations[:min(5, len(g.l.violations))])
		}
		g.logf("first offsets processed after the restart per partition: %v (commits acknowledged before it: %v)",
			g.l.firstAfter, g.l.floor)
	}
	g.logf("per member: %v, %d re-deliveries", g.l.perMember, g.l.redelivered)
}

func (g *groupRun) uniqueNow() int {
	g.l.mu.Lock()
	defer g.l.mu.Unlock()
	return g.l.unique
}

func (g *groupRun) waitUntil(what string, cond func() bool) {
	for !cond() {
		if time.Now().After(g.deadline) {
			g.failf("timed out waiting for %s (%s)", what, g.progress())
		}
		g.checkMembers()
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *groupRun) checkMembers() {
	for _, m := range g.members {
		if e := m.err(); e != "" {
			g.failf("member %s died: %s", m.name, e)
		}
	}
}

// ------------------------------------------------------------------ admin

func (g *groupRun) createTopic() {
	ctx, cancel := g.ctx(20 * time.Second)
	defer cancel()
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 10000
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic = topic
	t.NumPartitions = gPartitions
	t.ReplicationFactor = 1
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, g.admin)
	if err != nil {
		g.failf("CreateTopics: %v", err)
	}
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
			g.failf("CreateTopics %s: %v", rt.Topic, err)
		}
	}
	g.logf("created topic %s with %d partitions (CreateTopics)", topic, gPartitions)
}

func (g *groupRun) endOffsets() [gPartitions]int64 {
	ctx, cancel := g.ctx(15 * time.Second)
	defer cancel()
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for p := int32(0); p < gPartitions; p++ {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = -1 // latest
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, g.admin)
	if err != nil {
		g.failf("ListOffsets: %v", err)
	}
	var out [gPartitions]int64
	for i := range out {
		out[i] = -1
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				g.failf("ListOffsets %s/%d: %v", t.Topic, p.Partition, err)
			}
			out[p.Partition] = p.Offset
		}
	}
	return out
}

// committed fetches the group's committed offsets (OffsetFetch; -1 = none).
func (g *groupRun) committed() ([gPartitions]int64, error) {
	var out [gPartitions]int64
	for i := range out {
		out[i] = -1
	}
	ctx, cancel := g.ctx(10 * time.Second)
	defer cancel()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = g.group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic = topic
	for p := int32(0); p < gPartitions; p++ {
		rt.Partitions = append(rt.Partitions, p)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, g.admin)
	if err != nil {
		return out, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return out, fmt.Errorf("OffsetFetch: %w", err)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return out, fmt.Errorf("OffsetFetch %s/%d: %w", t.Topic, p.Partition, err)
			}
			if t.Topic == topic && p.Partition >= 0 && p.Partition < gPartitions {
				out[p.Partition] = p.Offset
			}
		}
	}
	return out, nil
}

func (g *groupRun) committedRetry() ([gPartitions]int64, error) {
	var lastErr error
	until := time.Now().Add(15 * time.Second)
	for time.Now().Before(until) && time.Now().Before(g.deadline) {
		c, err := g.committed()
		if err == nil {
			return c, nil
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	return [gPartitions]int64{}, lastErr
}

// ------------------------------------------------------------------ produce

func (g *groupRun) produce() {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.ClientID("ferry-compat-franz-go-producer"),
		// Idempotence off: this check is about the consumer group, not the producer.
		kgo.DisableIdempotentWrite(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5 * time.Millisecond),
	}, g.common...)...)
	if err != nil {
		g.failf("new producer client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := g.ctx(30 * time.Second)
	defer cancel()
	var errs []string
	for i := 0; i < gN; i++ {
		idx := i
		r := &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("%s-%d", client, i))}
		cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			g.l.mu.Lock()
			defer g.l.mu.Unlock()
			if err != nil {
				if len(errs) < 5 {
					errs = append(errs, fmt.Sprintf("record #%d: %v", idx, err))
				}
				return
			}
			g.l.prodPartition[idx] = r.Partition
			g.l.prodOffset[idx] = r.Offset
		})
	}
	if err := cl.Flush(ctx); err != nil {
		g.failf("flush: %v (first record errors: %v)", err, errs)
	}
	g.l.mu.Lock()
	defer g.l.mu.Unlock()
	if len(errs) > 0 {
		g.failf("produce errors: %s", strings.Join(errs, "; "))
	}
	var offs [gPartitions][]int64
	for i := 0; i < gN; i++ {
		p := g.l.prodPartition[i]
		if p < 0 || p >= gPartitions {
			g.failf("record #%d acknowledged on partition %d", i, p)
		}
		offs[p] = append(offs[p], g.l.prodOffset[i])
	}
	for p := range offs {
		slices.Sort(offs[p])
		for j, o := range offs[p] {
			if o != int64(j) {
				g.failf("partition %d: acknowledged offsets are not 0..%d", p, len(offs[p])-1)
			}
		}
		if len(offs[p]) == 0 {
			g.failf("records not spread over all partitions: partition %d got none", p)
		}
		g.l.leo[p] = int64(len(offs[p]))
	}
	g.logf("produced %d keyed records over %d partitions: %v", gN, gPartitions, g.l.leo)
}

// ------------------------------------------------------------------ ledger

func (g *groupRun) process(m string, r *kgo.Record) {
	v := string(r.Value)
	i, err := strconv.Atoi(v[strings.LastIndex(v, "-")+1:])
	if err != nil || i < 0 || i >= gN || v != fmt.Sprintf("%s-%d", client, i) || string(r.Key) != fmt.Sprintf("k%d", i) {
		g.failf("%s: record %d/%d key=%q value=%q", m, r.Partition, r.Offset, r.Key, r.Value)
	}
	if r.Topic != topic {
		g.failf("%s: record from topic %q", m, r.Topic)
	}
	g.l.mu.Lock()
	defer g.l.mu.Unlock()
	if g.l.prodPartition[i] != r.Partition || g.l.prodOffset[i] != r.Offset {
		g.failf("%s: value #%d read at %d/%d, produced at %d/%d", m, i, r.Partition, r.Offset,
			g.l.prodPartition[i], g.l.prodOffset[i])
	}
	if g.l.counts[i] == 0 {
		g.l.unique++
	} else {
		g.l.redelivered++
	}
	g.l.counts[i]++
	g.l.perMember[m]++
	if g.l.killPhase == "after" {
		if g.l.firstAfter[r.Partition] < 0 {
			g.l.firstAfter[r.Partition] = r.Offset
		}
		if r.Offset < g.l.floor[r.Partition] {
			g.l.violations = append(g.l.violations, fmt.Sprintf("%s %d/%d < %d", m, r.Partition, r.Offset, g.l.floor[r.Partition]))
		}
	}
}

// ------------------------------------------------------------------ broker kill

func (g *groupRun) requestKill() {
	ctl := os.Getenv("FERRY_CONTROL_DIR")
	if st, err := os.Stat(ctl); ctl == "" || err != nil || !st.IsDir() {
		g.failf("mode 'kill' needs FERRY_CONTROL_DIR (run it through tests/compat/run.sh)")
	}
	done := filepath.Join(ctl, "kill-done")
	failed := filepath.Join(ctl, "kill-failed")
	_ = os.Remove(done)
	_ = os.Remove(failed)
	tmp := filepath.Join(ctl, fmt.Sprintf(".kill-request.%d", os.Getpid()))
	if err := os.WriteFile(tmp, []byte(client+"\n"), 0o644); err != nil {
		g.failf("write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(ctl, "kill-request")); err != nil {
		g.failf("rename kill-request: %v", err)
	}
	g.l.mu.Lock()
	g.l.killPhase = "during"
	snapshot := g.l.acked
	g.l.mu.Unlock()
	g.logf("asked the runner to SIGKILL and restart the broker; acknowledged commits so far %v", snapshot)
	until := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(done); err == nil {
			break
		}
		if b, err := os.ReadFile(failed); err == nil {
			g.failf("runner could not restart the broker: %s", strings.TrimSpace(string(b)))
		}
		if time.Now().After(until) || time.Now().After(g.deadline) {
			g.failf("runner did not report kill-done within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(done)
	g.l.mu.Lock()
	g.l.killPhase = "after"
	g.l.floor = g.l.acked
	floor := g.l.floor
	g.l.mu.Unlock()
	g.logf("broker killed and restarted (%s); commits acknowledged before the restart: %v", strings.TrimSpace(string(b)), floor)
}

// ------------------------------------------------------------------ members

type member struct {
	name     string
	stopping chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	mu       sync.Mutex
	errMsg   string
}

func (m *member) err() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.errMsg
}

func (m *member) stopAndWait(g *groupRun) {
	m.stopOnce.Do(func() { close(m.stopping) })
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		g.failf("member %s did not close within 20 s", m.name)
	}
	if e := m.err(); e != "" {
		g.failf("member %s died: %s", m.name, e)
	}
}

func parts(a map[string][]int32) []int32 {
	out := slices.Clone(a[topic])
	slices.Sort(out)
	return out
}

func (g *groupRun) startMember(name string) {
	m := &member{name: name, stopping: make(chan struct{}), done: make(chan struct{})}
	g.members = append(g.members, m)
	go g.memberLoop(m)
}

func (g *groupRun) memberLoop(m *member) {
	defer close(m.done)
	name := m.name
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.ClientID("ferry-compat-franz-go-" + name),
		kgo.ConsumerGroup(g.group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(gSessionTimeout),
		kgo.HeartbeatInterval(gHeartbeatInterval),
		kgo.RebalanceTimeout(gRebalanceTimeout),
		kgo.FetchMaxWait(300 * time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			g.logf("%s: assigned %v", name, parts(a))
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			g.logf("%s: revoked %v", name, parts(a))
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			g.logf("%s: lost %v", name, parts(a))
		}),
	}, g.common...)...)
	if err != nil {
		m.mu.Lock()
		m.errMsg = fmt.Sprintf("new group client: %v", err)
		m.mu.Unlock()
		return
	}
	pollErrors := 0
	for {
		select {
		case <-m.stopping:
			cl.AllowRebalance()
			cl.Close() // leaves the group
			return
		default:
		}
		ctx, cancel := g.ctx(300 * time.Millisecond)
		fetches := cl.PollRecords(ctx, gMaxBatch)
		cancel()
		if fetches.IsClientClosed() {
			m.mu.Lock()
			m.errMsg = "client closed unexpectedly"
			m.mu.Unlock()
			return
		}
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			pollErrors++
			if pollErrors <= 5 {
				g.logf("%s: fetch error on %s/%d (tolerated): %v", name, fe.Topic, fe.Partition, fe.Err)
			}
		}
		recs := fetches.Records()
		if len(recs) == 0 {
			cl.AllowRebalance()
			continue
		}
		next := map[int32]kgo.EpochOffset{}
		for _, r := range recs {
			g.process(name, r)
			if eo, ok := next[r.Partition]; !ok || r.Offset+1 > eo.Offset {
				next[r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
			}
		}
		time.Sleep(gProcessDelay * time.Duration(len(recs)))
		cctx, ccancel := g.ctx(10 * time.Second)
		var commitErr error
		acked := map[int32]int64{}
		cl.CommitOffsetsSync(cctx, map[string]map[int32]kgo.EpochOffset{topic: next},
			func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				if err != nil {
					commitErr = err
					return
				}
				for _, t := range resp.Topics {
					for _, p := range t.Partitions {
						if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
							commitErr = fmt.Errorf("partition %d: %w", p.Partition, e)
						} else if eo, ok := next[p.Partition]; ok && t.Topic == topic {
							acked[p.Partition] = eo.Offset
						}
					}
				}
			})
		ccancel()
		g.l.mu.Lock()
		if len(acked) > 0 {
			g.l.commitOK++
			for p, o := range acked {
				g.l.acked[p] = max(g.l.acked[p], o)
			}
		}
		nFailed := 0
		if commitErr != nil {
			g.l.commitFailed++
			nFailed = g.l.commitFailed
		}
		g.l.mu.Unlock()
		if commitErr != nil && nFailed <= 10 {
			g.logf("%s: commit failed (tolerated, records will be re-delivered): %v", name, commitErr)
		}
		cl.AllowRebalance()
	}
}
