package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/sinks/edge"
)

// Client holds what every Kafka connection of qfence shares: the brokers,
// TLS and SASL, and a client for metadata, offsets and topic creation.
type Client struct {
	// CoPartitionedOrders makes EnsureTopics refuse an orders topic whose
	// partition count is not the pings topic's (orders.co_partitioned).
	CoPartitionedOrders bool
	// maxRecord is the largest record batch the dead-letter topics take
	// (their max.message.bytes), learned by EnsureTopics; 0 until then.
	maxRecord atomic.Int64
	cfg       config.Kafka
	brokers   []string
	dialer    *kafka.Dialer
	transport *kafka.Transport
	client    *kafka.Client
	// fetch reads the pings partitions: its own transport, whose metadata
	// is refreshed every 2 s, finds a moved leader sooner than the shared
	// one's 10 s.
	fetchTransport *kafka.Transport
	fetch          *kafka.Client
	log            *slog.Logger
}

// NewClient prepares connections (nothing is dialled yet).
func NewClient(cfg config.Kafka, log *slog.Logger) (*Client, error) {
	k := &Client{cfg: cfg, brokers: cfg.BrokerList(), log: log}
	tlsCfg, err := edge.TLSConfig(cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("kafka.tls: %w", err)
	}
	mech, err := saslMechanism(cfg.SASL)
	if err != nil {
		return nil, fmt.Errorf("kafka.sasl: %w", err)
	}
	k.dialer = &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: tlsCfg, SASLMechanism: mech}
	client := func(metadataTTL time.Duration) (*kafka.Transport, *kafka.Client) {
		tr := &kafka.Transport{TLS: tlsCfg, SASL: mech, DialTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second,
			MetadataTTL: metadataTTL}
		return tr, &kafka.Client{Addr: kafka.TCP(k.brokers...), Transport: tr, Timeout: 15 * time.Second}
	}
	k.transport, k.client = client(10 * time.Second)
	k.fetchTransport, k.fetch = client(2 * time.Second)
	return k, nil
}

// Close releases idle connections.
func (k *Client) Close() {
	k.transport.CloseIdleConnections()
	k.fetchTransport.CloseIdleConnections()
}

func saslMechanism(c config.SASL) (sasl.Mechanism, error) {
	switch c.Mechanism {
	case "":
		return nil, nil
	case "PLAIN":
		return plain.Mechanism{Username: c.Username, Password: string(c.Password)}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, c.Username, string(c.Password))
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, c.Username, string(c.Password))
	}
	return nil, fmt.Errorf("unknown mechanism %q", c.Mechanism)
}

// Partitions returns the partition count of each topic that exists.
func (k *Client) Partitions(ctx context.Context, topics ...string) (map[string]int, error) {
	md, err := k.client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("kafka metadata from %v: %w", k.brokers, err)
	}
	out := make(map[string]int)
	for _, t := range md.Topics {
		if t.Error == nil {
			out[t.Name] = len(t.Partitions)
		}
	}
	return out, nil
}

// EnsureTopics checks the topics qfence uses and, when kafka.create_topics
// allows it, creates the missing ones (the orders and state topics
// compacted). It refuses to go on when qfence-state does not have as many
// partitions as pings, since a partition's state lives in the state
// partition of the same number.
func (k *Client) EnsureTopics(ctx context.Context) error {
	t := k.cfg.Topics
	want := []kafka.TopicConfig{
		{Topic: t.Pings, NumPartitions: k.cfg.Partitions},
		{Topic: t.Orders, NumPartitions: k.cfg.Partitions, ConfigEntries: compacted},
		{Topic: t.Violations, NumPartitions: k.cfg.Partitions},
		{Topic: t.State, NumPartitions: k.cfg.Partitions, ConfigEntries: compacted},
		{Topic: t.PingsDLQ, NumPartitions: 1},
		{Topic: t.OrdersDLQ, NumPartitions: 1},
		{Topic: t.Passes, NumPartitions: k.cfg.Partitions, ConfigEntries: compacted},
		{Topic: t.PassesDLQ, NumPartitions: 1},
		{Topic: t.Notifications, NumPartitions: k.cfg.Partitions},
		{Topic: t.Dispositions, NumPartitions: k.cfg.Partitions},
		{Topic: t.DispositionsDLQ, NumPartitions: 1},
	}
	names := make([]string, len(want))
	for i, w := range want {
		names[i] = w.Topic
	}
	have, err := k.Partitions(ctx, names...)
	if err != nil {
		return err
	}
	if n, ok := have[t.Pings]; ok {
		want[3].NumPartitions = n // the state topic follows the pings topic
	}
	var missing []kafka.TopicConfig
	for _, w := range want {
		if _, ok := have[w.Topic]; !ok {
			missing = append(missing, kafka.TopicConfig{Topic: w.Topic, NumPartitions: w.NumPartitions, ReplicationFactor: -1, ConfigEntries: w.ConfigEntries})
		}
	}
	if len(missing) > 0 {
		if !k.cfg.CreateTopics {
			return fmt.Errorf("topics %v do not exist: create them (orders and state with cleanup.policy=compact, state with as many partitions as pings) or set kafka.create_topics: true", topicNames(missing))
		}
		res, err := k.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: missing})
		if err != nil {
			return fmt.Errorf("create topics %v: %w", topicNames(missing), err)
		}
		for name, err := range res.Errors {
			if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
				return fmt.Errorf("create topic %s: %s (create it yourself, or check kafka.partitions and the broker's limits): %w", name, describe(err), err)
			}
		}
		for _, m := range missing {
			k.log.Info("topic created", "topic", m.Topic, "partitions", m.NumPartitions)
		}
		if have, err = k.waitTopics(ctx, names); err != nil {
			return err
		}
	}
	if err := k.checkTopicConfigs(ctx, names); err != nil {
		return err
	}
	if have[t.State] != have[t.Pings] {
		return fmt.Errorf("topic %s has %d partitions but %s has %d: a partition's state lives in the state partition of the same number, so they must match (add partitions to %s, or delete it to have qfence recreate it)",
			t.State, have[t.State], t.Pings, have[t.Pings], t.State)
	}
	if k.CoPartitionedOrders && have[t.Orders] != have[t.Pings] {
		return fmt.Errorf("orders.co_partitioned is on, but topic %s has %d partitions and %s has %d: a patient's order must sit in the partition "+
			"of the same number as the patient's pings. Adding partitions moves keys, so recreate %s with %d partitions and produce the orders again "+
			"(kafka-topics.sh --bootstrap-server %s --delete --topic %s; kafka-topics.sh --bootstrap-server %s --create --topic %s --partitions %d "+
			"--config cleanup.policy=compact), or turn orders.co_partitioned off",
			t.Orders, have[t.Orders], t.Pings, have[t.Pings], t.Orders, have[t.Pings], k.brokers[0], t.Orders, k.brokers[0], t.Orders, have[t.Pings])
	}
	return nil
}

var compacted = []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}}

// describe says in words what a Kafka error code means ("[42] Invalid
// Request" says little).
func describe(err error) string {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Description()
	}
	return err.Error()
}

// checkTopicConfigs refuses a compacted topic (orders, state) that is not
// compacted (its records would expire: the state and the orders with
// them), warns about a topic with one replica on a cluster that has more,
// and learns the largest record the dead-letter topics take.
func (k *Client) checkTopicConfigs(ctx context.Context, names []string) error {
	t := k.cfg.Topics
	req := &kafka.DescribeConfigsRequest{}
	for _, n := range names {
		req.Resources = append(req.Resources, kafka.DescribeConfigRequestResource{ResourceType: kafka.ResourceTypeTopic, ResourceName: n,
			ConfigNames: []string{"cleanup.policy", "max.message.bytes"}})
	}
	res, err := k.client.DescribeConfigs(ctx, req)
	if err != nil {
		return fmt.Errorf("describe the configs of topics %v: %w", names, err)
	}
	configs := map[string]map[string]string{}
	for _, r := range res.Resources {
		if r.Error != nil {
			return fmt.Errorf("describe the configs of topic %s: %s: %w", r.ResourceName, describe(r.Error), r.Error)
		}
		configs[r.ResourceName] = map[string]string{}
		for _, e := range r.ConfigEntries {
			configs[r.ResourceName][e.ConfigName] = e.ConfigValue
		}
	}
	for _, name := range []string{t.Orders, t.State, t.Passes} {
		if policy := configs[name]["cleanup.policy"]; policy != "compact" {
			return fmt.Errorf("topic %s has cleanup.policy=%s, but qfence keeps a table in it and needs cleanup.policy=compact (with delete its records expire): "+
				"run kafka-configs.sh --bootstrap-server %s --alter --entity-type topics --entity-name %s --add-config cleanup.policy=compact",
				name, policy, k.brokers[0], name)
		}
	}
	limit := defaultMaxRecord
	for _, name := range []string{t.PingsDLQ, t.OrdersDLQ, t.PassesDLQ, t.DispositionsDLQ} {
		if v, err := strconv.Atoi(configs[name]["max.message.bytes"]); err == nil && v > 0 {
			limit = min(limit, v)
		}
	}
	k.maxRecord.Store(int64(limit))
	md, err := k.client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return fmt.Errorf("kafka metadata from %v: %w", k.brokers, err)
	}
	for _, topic := range md.Topics {
		if len(md.Brokers) > 1 && len(topic.Partitions) > 0 && len(topic.Partitions[0].Replicas) == 1 {
			k.log.Warn("topic has one replica on a cluster with more brokers: a broker lost loses its partitions (raise the replication factor)",
				"topic", topic.Name, "brokers", len(md.Brokers))
		}
	}
	return nil
}

// MaxRecord is the largest record batch the dead-letter topics take.
func (k *Client) MaxRecord() int {
	if n := k.maxRecord.Load(); n > 0 {
		return int(n)
	}
	return defaultMaxRecord
}

// defaultMaxRecord is Kafka's default max.message.bytes (1 MB and the
// batch overhead), used when the broker does not say.
const defaultMaxRecord = 1048588

func topicNames(ts []kafka.TopicConfig) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Topic
	}
	return out
}

// waitTopics waits until metadata shows every topic (creation is async).
func (k *Client) waitTopics(ctx context.Context, names []string) (map[string]int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		have, err := k.Partitions(ctx, names...)
		if err == nil && len(have) == len(names) {
			return have, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("topics %v did not appear within 30s of being created (last error: %v)", names, err)
		}
		if err := edge.Sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// EndOffsets returns the next offset to be written of every partition of
// topic (its high watermark).
func (k *Client) EndOffsets(ctx context.Context, topic string, partitions int) (map[int]int64, error) {
	return k.listOffsets(ctx, topic, partitions, kafka.LastOffsetOf)
}

// FirstOffsets returns the first offset still held of every partition of
// topic (its log start: compaction and retention move it).
func (k *Client) FirstOffsets(ctx context.Context, topic string, partitions int) (map[int]int64, error) {
	return k.listOffsets(ctx, topic, partitions, kafka.FirstOffsetOf)
}

func (k *Client) listOffsets(ctx context.Context, topic string, partitions int, which func(int) kafka.OffsetRequest) (map[int]int64, error) {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := 0; p < partitions; p++ {
		req.Topics[topic] = append(req.Topics[topic], which(p))
	}
	res, err := k.client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	first := which(0).Timestamp == kafka.FirstOffset
	out := make(map[int]int64, partitions)
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		if first {
			out[po.Partition] = po.FirstOffset
		} else {
			out[po.Partition] = po.LastOffset
		}
	}
	// A partition the answer leaves out must not read as offset 0: a table
	// would count as loaded before it was read, a topic as caught up.
	for p := range partitions {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("list offsets of %s: the broker's answer has no partition %d (%d of %d)", topic, p, len(out), partitions)
		}
	}
	return out, nil
}

// CommittedOffsets returns the group's committed offsets of topic.
func (k *Client) CommittedOffsets(ctx context.Context, topic string, partitions int) (map[int]int64, error) {
	return k.groupOffsets(ctx, k.cfg.GroupID, topic, partitions)
}

// groupOffsets returns group's committed offsets of topic (a partition
// with none is left out).
func (k *Client) groupOffsets(ctx context.Context, group, topic string, partitions int) (map[int]int64, error) {
	ps := make([]int, partitions)
	for i := range ps {
		ps[i] = i
	}
	res, err := k.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
	if err != nil {
		return nil, fmt.Errorf("fetch the offsets group %s committed of %s: %w", group, topic, err)
	}
	out := make(map[int]int64)
	for _, p := range res.Topics[topic] {
		if p.Error == nil {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}

// commitAs commits offsets of topic for group as a consumer outside any
// generation (Kafka's "simple" commit: the group has no members).
func (k *Client) commitAs(ctx context.Context, group, topic string, offsets map[int]int64) error {
	var commits []kafka.OffsetCommit
	for p, o := range offsets {
		commits = append(commits, kafka.OffsetCommit{Partition: p, Offset: o})
	}
	res, err := k.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{topic: commits}})
	if err != nil {
		return fmt.Errorf("commit offsets of %s for group %s: %w", topic, group, err)
	}
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return fmt.Errorf("commit offsets of %s/%d for group %s: %w", topic, p.Partition, group, p.Error)
		}
	}
	return nil
}

// Reachable checks that a broker answers now: a fresh connection
// (authenticated, when SASL is on) and a metadata round trip to the first
// broker that takes it. (The client's
// metadata is cached, so asking it would answer for a dead cluster.)
func (k *Client) Reachable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var errs []error
	for _, b := range k.brokers {
		conn, err := k.dialer.DialContext(ctx, "tcp", b)
		if err == nil {
			if dl, ok := ctx.Deadline(); ok {
				_ = conn.SetDeadline(dl)
			}
			_, err = conn.Brokers() // a metadata round trip, which needs authentication

			conn.Close()
		}
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", b, err))
	}
	return errors.Join(errs...)
}

// reader reads one partition of a topic from offset.
func (k *Client) reader(topic string, partition int, offset int64) (*kafka.Reader, error) {
	// MaxWait bounds only a fetch that finds nothing (MinBytes 1 answers as
	// soon as a message is there). kafka-go asks the broker to hold the fetch
	// for MaxWait less its 1 s round-trip allowance (a quarter of MaxWait
	// when MaxWait is under 1 s); with 250 ms a broker 62 ms late on a busy
	// machine was an i/o timeout and a logged error on every idle partition.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.brokers, Topic: topic, Partition: partition, Dialer: k.dialer,
		MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 1500 * time.Millisecond, QueueCapacity: 4096,
		ReadBackoffMin: 100 * time.Millisecond, ReadBackoffMax: 2 * time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			k.log.Warn("kafka reader", "topic", topic, "partition", partition, "err", fmt.Sprintf(msg, args...))
		})})
	if err := r.SetOffset(offset); err != nil {
		r.Close()
		return nil, fmt.Errorf("set offset of %s/%d to %d: %w", topic, partition, offset, err)
	}
	return r, nil
}

// WaitKafka waits until a broker answers at addr.
func WaitKafka(ctx context.Context, addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(addr), Timeout: time.Second, Transport: tr}
	var last error
	for time.Now().Before(deadline) {
		if _, last = c.Metadata(ctx, &kafka.MetadataRequest{}); last == nil {
			return nil
		}
		if err := edge.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("no kafka broker answered at %s within %s: %w", addr, within, last)
}

// ReadAll calls fn for every record of topic, partition by partition, from
// the start to the end the partitions have now.
func (k *Client) ReadAll(ctx context.Context, topic string, fn func(m kafka.Message)) error {
	parts, err := k.Partitions(ctx, topic)
	if err != nil {
		return err
	}
	ends, err := k.EndOffsets(ctx, topic, parts[topic])
	if err != nil {
		return err
	}
	for p, end := range ends {
		if end == 0 {
			continue
		}
		r, err := k.reader(topic, p, kafka.FirstOffset)
		if err != nil {
			return err
		}
		for {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				r.Close()
				return fmt.Errorf("read %s/%d: %w", topic, p, err)
			}
			fn(m)
			if m.Offset >= end-1 {
				break
			}
		}
		r.Close()
	}
	return nil
}

// Lag is how many messages of topic the group has not committed yet.
func (k *Client) Lag(ctx context.Context, topic string) (int64, error) {
	parts, err := k.Partitions(ctx, topic)
	if err != nil {
		return 0, err
	}
	ends, err := k.EndOffsets(ctx, topic, parts[topic])
	if err != nil {
		return 0, err
	}
	committed, err := k.CommittedOffsets(ctx, topic, parts[topic])
	if err != nil {
		return 0, err
	}
	var lag int64
	for p, end := range ends {
		lag += max(0, end-max(committed[p], 0))
	}
	return lag, nil
}
