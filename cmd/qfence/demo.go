package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/qfence/qfence/cmd/internal/daemon"
	"github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/edge"
	qkafka "github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/local"

	"github.com/segmentio/kafka-go"
	"github.com/spf13/cobra"

	"github.com/qfence/qfence/cmd/internal/sim"
	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/processor"
)

func newDemo() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Everything on one machine: ClickHouse, a broker, the simulator and qfence, ending in a summary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&o.patients, "patients", 10000, "simulated patients")
	cmd.Flags().DurationVar(&o.stream, "stream", time.Minute, "real time over which the pings are streamed")
	cmd.Flags().BoolVar(&o.short, "short", false, "a small, fast run (CI)")
	cmd.Flags().BoolVar(&o.keep, "keep", false, "keep everything running after the summary, and print the review queue's and a dossier's URLs (Ctrl-C ends it)")
	return cmd
}

type demoOptions struct {
	patients int
	stream   time.Duration
	short    bool
	keep     bool
}

// demo runs the whole system on one machine and prints what it did.
func demo(ctx context.Context, o demoOptions, out io.Writer) error {
	if o.short {
		o.patients, o.stream = 500, 5*time.Second
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	log := slog.New(edge.Quiet(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), edge.FloodInterval, nil))
	const duration = 30 * time.Minute
	say("qfence demo: %d patients, %s of simulated time streamed over %s", o.patients, duration, o.stream)

	say("• ClickHouse: starting a private server (QFENCE_CLICKHOUSE_ADDR uses yours instead)…")
	ch, err := local.StartClickHouseServer(ctx, log)
	if err != nil {
		return err
	}
	defer ch.Stop()
	brokerAddr, metricsAddr, err := twoFreeAddrs()
	if err != nil {
		return err
	}
	broker, err := local.StartBroker(brokerAddr, "", 4)
	if err != nil {
		return err
	}
	defer broker.Close()
	say("• Kafka: embedded broker on %s; ClickHouse on %s", brokerAddr, ch.Addr)

	cfg := config.Default()
	cfg.Kafka.Brokers = brokerAddr
	cfg.ClickHouse.Addr = ch.Addr
	cfg.ClickHouse.Database = "qfence_demo"
	cfg.Metrics.Listen = metricsAddr
	// Half an hour of simulated time needs shorter rules than a real quarantine.
	cfg.Rules.BreachAfter, cfg.Rules.SignalTimeout, cfg.Rules.EscalateAfter = 2*time.Minute, 5*time.Minute, 4*time.Minute
	cfg.Checkins.ResponseWindow, cfg.Checkins.RandomPerDay, cfg.Checkins.Timezone = 5*time.Minute, 24, "Europe/Moscow"
	// A fixed key, so that the demo is the same every run; a deployment's
	// comes from the environment or a file (checkins.schedule_key).
	cfg.Checkins.ScheduleKey = "qfence-demo-schedule-key-not-a-secret-0123456789"
	say("• rules for the demo: breach after %s outside (%d pings), escalated after %s more, signal lost after %s, margin %g m;\n"+
		"  check-ins answered within %s, %d random ones a day outside %s %s",
		cfg.Rules.BreachAfter, cfg.Rules.BreachMinPings, cfg.Rules.EscalateAfter, cfg.Rules.SignalTimeout, cfg.Rules.MarginM,
		cfg.Checkins.ResponseWindow, cfg.Checkins.RandomPerDay, cfg.Checkins.QuietHours, cfg.Checkins.Timezone)
	rules := cfg.EngineRules()

	dir, err := os.MkdirTemp("", "qfence-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// A mislocated phone's access point is all it sees again every 9
	// simulated minutes (every evening, compressed), at the same wrong place.
	s := sim.Generate(sim.Params{Seed: 1, Patients: o.patients, Start: time.Now().UTC().Add(-duration).Truncate(time.Second),
		Duration: duration, Interval: 30 * time.Second, Rules: rules, Recur: 9 * time.Minute})
	if err := os.WriteFile(filepath.Join(dir, "zones.geojson"), s.Zones, 0o644); err != nil {
		return err
	}
	cfg.Zones.File = filepath.Join(dir, "zones.geojson")
	say("• simulator: %d orders, %d signed QR passes, %d pings (%d broken on purpose), behaviours %v", len(s.Orders), len(s.Passes), len(s.Pings), s.Bad, s.Counts)
	// The passes' issuer key, and the API a police scanner asks.
	cfg.Passes.VerifyKeysFile = filepath.Join(dir, "pass-keys.txt")
	if err := os.WriteFile(cfg.Passes.VerifyKeysFile, []byte(s.PublicKey()+"\n"), 0o644); err != nil {
		return err
	}
	// The check-in verification service's key: a check-in counts only with
	// its signed statement, from a phone the platform vouches for.
	cfg.Checkins.MinIntegrity = "device"
	if err := os.WriteFile(filepath.Join(dir, "checkin-keys.json"), s.CheckinKeys(), 0o644); err != nil {
		return err
	}
	if err := cfg.UseCheckinKeys(filepath.Join(dir, "checkin-keys.json")); err != nil {
		return err
	}
	rules = cfg.EngineRules()
	say("• check-ins count only when the verification service signed them (%s, min_integrity %s); %d forgers try every kind of forgery, %d patients leave a second phone at home",
		sim.VerifierKID, cfg.Checkins.MinIntegrity, s.Counts[sim.Forger], s.Counts[sim.SecondPhone])
	apiAddr, _, err := twoFreeAddrs()
	if err != nil {
		return err
	}
	const policeToken, reviewerToken = "demo-police-token-0000", "demo-reviewer-token-0000"
	cfg.API.Listen, cfg.API.TokensFile = apiAddr, filepath.Join(dir, "tokens")
	if err := os.WriteFile(cfg.API.TokensFile, []byte("police:demo-officer:"+policeToken+"\nreviewer:demo-reviewer:"+reviewerToken+"\n"), 0o600); err != nil {
		return err
	}

	// The orders and passes are on their topics before qfence starts, as
	// in production: it reads both to their ends before it takes a ping.
	k, err := qkafka.NewClient(cfg.Kafka, log)
	if err != nil {
		return err
	}
	defer k.Close()
	if err := k.EnsureTopics(ctx); err != nil {
		return err
	}
	if err := k.Publish(ctx, cfg.Kafka.Topics.Orders, sim.Messages(sim.Lines(s.Orders)), 0, nil); err != nil {
		return err
	}
	if err := k.Publish(ctx, cfg.Kafka.Topics.Passes, sim.PassMessages(s.Passes), 0, nil); err != nil {
		return err
	}
	dctx, stopDaemon := context.WithCancel(ctx)
	daemonDone := make(chan error, 1)
	stopped := false
	defer func() { // on an error path: stop the daemon before what it uses
		if !stopped {
			stopDaemon()
			<-daemonDone
		}
	}()
	readyCh := make(chan func(context.Context) string, 1)
	go func() {
		daemonDone <- daemon.Run(dctx, &cfg, log, &daemon.Hooks{Ready: func(r func(context.Context) string) { readyCh <- r }})
	}()
	var ready func(context.Context) string
	select {
	case ready = <-readyCh:
	case err := <-daemonDone:
		return fmt.Errorf("qfence did not start: %w", err)
	}
	if err := waitUntil(ctx, time.Minute, func() bool { return ready(ctx) == "" }); err != nil {
		return fmt.Errorf("qfence not ready: %s", ready(ctx))
	}
	say("• qfence is ready (GET http://%s/readyz); streaming pings, and the patients' app answers the check-in requests it reads from %s…",
		metricsAddr, cfg.Kafka.Topics.Notifications)
	// The app: it reads the notifications topic as the phones' push service
	// would, and answers each check-in request as the ground truth says.
	var answers sim.Queue
	app := s.App(cfg.Checkins.ResponseWindow)
	actx, stopApp := context.WithCancel(ctx)
	appDone := make(chan error, 1)
	go func() {
		appDone <- k.ReadTable(actx, cfg.Kafka.Topics.Notifications, true, func(r *qkafka.TableRecord) {
			var n struct {
				PatientID string    `json:"patient_id"`
				Kind      string    `json:"kind"`
				EventID   string    `json:"event_id"`
				At        time.Time `json:"at"`
			}
			if json.Unmarshal(r.Value, &n) == nil && n.Kind == "checkin_request" {
				if a, ok := app.Answer(n.PatientID, n.EventID, n.At.UnixMilli()); ok {
					answers.Put(a)
				}
			}
		}, func() {})
	}()
	start := time.Now()
	publish := func(ctx context.Context, msgs []kafka.Message) error {
		return k.Publish(ctx, cfg.Kafka.Topics.Pings, msgs, 0, nil)
	}
	answered, err := sim.Stream(ctx, publish, s.Pings, int(float64(len(s.Pings))/o.stream.Seconds()), &answers, out)
	stopApp()
	if aerr := <-appDone; aerr != nil && !errors.Is(aerr, context.Canceled) {
		return fmt.Errorf("the simulated app: %w", aerr)
	}
	if err != nil {
		return err
	}
	if err := waitUntil(ctx, 5*time.Minute, func() bool { lag, err := k.Lag(ctx, cfg.Kafka.Topics.Pings); return err == nil && lag == 0 }); err != nil {
		return fmt.Errorf("qfence did not catch up: %w", err)
	}
	took := time.Since(start)

	var events []sim.Event
	var sample, overrun []byte
	byType := map[string]int{}
	byPatient := map[string][][]byte{} // events and notifications, for the stories below
	if err := k.ReadAll(ctx, cfg.Kafka.Topics.Violations, func(m kafka.Message) {
		v := m.Value
		var e sim.Event
		if json.Unmarshal(v, &e) == nil {
			events = append(events, e)
			byType[e.Type]++
			byPatient[e.PatientID] = append(byPatient[e.PatientID], v)
			if e.Type == "breach_started" && sample == nil && e.Pass == nil {
				sample = v
			}
			if e.Type == "breach_started" && overrun == nil && e.Pass != nil && e.StartedAt > e.Pass.ValidTo { // an overrun, not a trip too far
				overrun = v
			}
		}
	}); err != nil {
		return err
	}
	say("\n== summary ==")
	say("pings: %d streamed and decided in %s (%.0f pings/s while streaming at the paced rate)", len(s.Pings), took.Round(time.Millisecond), float64(len(s.Pings))/took.Seconds())
	say("events on %s: %v", cfg.Kafka.Topics.Violations, byType)
	notes := map[string]int{}
	if err := k.ReadAll(ctx, cfg.Kafka.Topics.Notifications, func(m kafka.Message) {
		var n struct {
			PatientID string `json:"patient_id"`
			Kind      string `json:"kind"`
		}
		if json.Unmarshal(m.Value, &n) == nil {
			notes[n.Kind]++
			byPatient[n.PatientID] = append(byPatient[n.PatientID], m.Value)
		}
	}); err != nil {
		return err
	}
	say("notifications on %s: %v", cfg.Kafka.Topics.Notifications, notes)
	say("\nscorecard against the simulator's truth (breach rows leave out the mislocated Wi-Fi phones, counted below them):")
	card := sim.Score(s.Truth, events, &rules.Checkins)
	card.Print(out)
	// The same pings without the app's answers, through the same engine
	// offline: what the check-ins are worth.
	without, err := s.Decide(rules, false)
	if err != nil {
		return err
	}
	wcard := sim.Score(s.Truth, simEvents(without), &rules.Checkins)
	n := func(v int) string { return strconv.Itoa(v) }
	compare(out, "what the app's answers are worth (the same pings without them, through the engine offline)", "with", "without",
		[3]string{"false breach_started (mislocated Wi-Fi)", n(card.Count(sim.RowWifiBreaches)), n(wcard.Count(sim.RowWifiBreaches))},
		[3]string{"false breach_escalated", n(card.Count(sim.RowEscalationsFalse)), n(wcard.Count(sim.RowEscalationsFalse))},
		[3]string{"real breaches escalated (of those due)", n(card.Kind("breach_escalated").TruePos), n(wcard.Kind("breach_escalated").TruePos)})
	// The same pings and answers on the phone's word: what the keys are worth.
	word := rules
	word.Checkins.Attest = nil
	onWord, err := s.Decide(word, true)
	if err != nil {
		return err
	}
	ocard := sim.Score(s.Truth, simEvents(onWord), &word.Checkins)
	fe, oe := card.Row(sim.RowForgersEscalated), ocard.Row(sim.RowForgersEscalated)
	compare(out, "what the verification service's signatures are worth (the same pings and answers on the phone's word, offline)", "signed", "word",
		[3]string{"breaches a forged check-in ended", n(card.Count(sim.RowForgedEnded)), n(ocard.Count(sim.RowForgedEnded))},
		[3]string{"forgers' breaches escalated", fmt.Sprintf("%d/%d", fe.Right, fe.Of), fmt.Sprintf("%d/%d", oe.Right, oe.Of)})
	cleared := func(p string, v []sim.Event) bool {
		return s.Behaviour(p) == sim.WifiDrift && has(v, "breach_ended", "checkin") && !has(v, "breach_escalated", "")
	}
	// One breach, cleared, is the plainest story; a phone whose Wi-Fi stays
	// wrong starts a new breach after every check-in, each cleared again.
	id := story(byPatient, s, func(p string, v []sim.Event) bool { return cleared(p, v) && count(v, "breach_started") == 1 })
	if id == "" {
		id = story(byPatient, s, cleared)
	}
	if id != "" {
		say("\na false alarm a check-in resolved before escalation (%s: the phone's Wi-Fi put it %s from home; times UTC, texts in %s):",
			id, s.DriftDistance(id), cfg.Checkins.Timezone)
		printStory(out, byPatient[id])
	}
	// Learning from the answer: the same phone, the same wrong place, the
	// next episode: no warning.
	learnedOff := rules
	learnedOff.Mislocation.TTL = 0
	unlearned, err := s.Decide(learnedOff, true)
	if err != nil {
		return err
	}
	ucard := sim.Score(s.Truth, simEvents(unlearned), &learnedOff.Checkins)
	perEpisode := func(c sim.Card) string {
		return fmt.Sprintf("%.2f", float64(c.Count(sim.RowWifiBreaches))/float64(max(1, c.Count(sim.RowWifiEpisodes))))
	}
	walks, uwalks := card.Row(sim.RowWalksCaught), ucard.Row(sim.RowWalksCaught)
	compare(out, fmt.Sprintf("what learning from answers is worth (%d mislocated phones, %d episodes; the same pings and answers without it, offline)",
		card.Count(sim.RowWifiPlaces), card.Count(sim.RowWifiEpisodes)), "learning", "without",
		[3]string{"warnings in a place's first episode", n(card.Count(sim.RowWifiFirst)), n(ucard.Count(sim.RowWifiFirst))},
		[3]string{"warnings in its later episodes", n(card.Count(sim.RowWifiLater)), n(ucard.Count(sim.RowWifiLater))},
		[3]string{"warnings per episode", perEpisode(card), perEpisode(ucard)},
		[3]string{"false breach_escalated (mislocated phones)", n(card.Count(sim.RowWifiEscalated)), n(ucard.Count(sim.RowWifiEscalated))},
		[3]string{"walks to a learned place caught", fmt.Sprintf("%d/%d", walks.Right, walks.Of), fmt.Sprintf("%d/%d", uwalks.Right, uwalks.Of)},
		[3]string{"real breaches caught", n(card.Kind("breach_started").TruePos), n(ucard.Kind("breach_started").TruePos)})
	if id := story(byPatient, s, func(p string, v []sim.Event) bool {
		return s.Behaviour(p) == sim.WifiDrift && len(s.Episodes(p)) >= 2 && has(v, "mislocation_learned", "") && count(v, "breach_started") == 1
	}); id != "" {
		ep := s.Episodes(id)[1]
		flagged, err := knownMislocationRows(ctx, cfg.ClickHouse, id, ep)
		if err != nil {
			return err
		}
		say("\nasked once: %s's Wi-Fi put it %s from home twice; the answer to the first episode taught qfence the place (times UTC):",
			id, s.DriftDistance(id))
		printStory(out, byPatient[id])
		say("  %s  the second episode, to %s: %d network fixes inside the learned circle, stored uncertain with flag known_mislocation; no warning",
			hhmm(time.UnixMilli(ep[0]).UTC().Format(time.RFC3339)), hhmm(time.UnixMilli(ep[1]).UTC().Format(time.RFC3339)), flagged)
	}
	if id := story(byPatient, s, func(p string, v []sim.Event) bool {
		b := s.Behaviour(p)
		return (b == sim.Walk || b == sim.Drive) && has(v, "breach_escalated", "") && has(v, "checkin_missed", "")
	}); id != "" {
		say("\na real breach that escalated: warned, asked, no answer (%s; times UTC, texts in %s):", id, cfg.Checkins.Timezone)
		printStory(out, byPatient[id])
	}

	// A real selfie from a rooted phone with a spoofed fix is the subtle
	// forgery: the service signed it, and only its integrity verdict tells.
	forged := func(reason string) func(string, []sim.Event) bool {
		return func(p string, v []sim.Event) bool {
			return s.Behaviour(p) == sim.Forger && has(v, "checkin_rejected", reason) && has(v, "breach_escalated", "")
		}
	}
	id = story(byPatient, s, forged(processor.CheckinWeakIntegrity.String()))
	if id == "" {
		id = story(byPatient, s, forged(""))
	}
	if id != "" {
		say("\na forged check-in that did not count: out, asked, answered by a modified app (%s, whose forgery is rejected as %s; times UTC):",
			id, s.Forgery(id))
		printStory(out, byPatient[id])
	}

	stored, final, err := storedOnce(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	say("ClickHouse: %d pings stored once each under FINAL, of %d distinct valid pings sent (%d of them the app's check-ins; %d rows before merges)",
		final, distinctValid(append(answered, s.Pings...)), len(answered), stored)
	say("\nClickHouse, as a health analyst would ask it:")
	if err := analystQueries(ctx, cfg.ClickHouse, out); err != nil {
		return err
	}
	if sample != nil {
		say("\na breach as enforcement receives it, with its evidence:\n  %s", prettyEvent(sample))
	}
	if overrun != nil {
		say("\na trip that outlasted its QR pass: the breach names the pass, and counts from when it stopped covering:\n  %s", prettyEvent(overrun))
	}
	if err := scanPass(ctx, "http://"+apiAddr, policeToken, s, out); err != nil {
		return err
	}
	if err := review(ctx, s, k, &cfg, "http://"+apiAddr, reviewerToken, events, out); err != nil {
		return err
	}
	say("\nPrometheus: scrape http://%s/metrics (up while a daemon runs; `qfence run` serves it on metrics.listen)", metricsAddr)
	if o.keep {
		keep(ctx, "http://"+apiAddr, reviewerToken, events, out)
	}
	stopDaemon()
	stopped = true
	if err := <-daemonDone; err != nil {
		return err
	}
	say("demo done: everything it started is stopped and removed")
	return nil
}

// review works the queue as a simulated reviewer (every fifth escalation
// left waiting), has the app contest a few false breaches through the
// dispositions topic, and prints the outcomes from ClickHouse.
func review(ctx context.Context, s *sim.Scenario, k *qkafka.Client, cfg *config.Config, base, token string, events []sim.Event, out io.Writer) error {
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	rv, err := s.Review(ctx, client, base, token, events, 5)
	if err != nil {
		return err
	}
	contests := s.Contests(events, 3)
	if err := k.Publish(ctx, cfg.Kafka.Topics.Dispositions, contests, 0, nil); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nthe review queue, worked through the API by a simulated reviewer who sees the truth: %d escalations confirmed, %d dismissed as false_location, %d left waiting; "+
		"the app contested %d false breaches through %s\n", rv.Confirmed, rv.Dismissed, rv.Left, len(contests), cfg.Kafka.Topics.Dispositions)
	r, err := clickhouse.NewReader(ctx, cfg.ClickHouse, false)
	if err != nil {
		return err
	}
	defer r.Close()
	want := rv.Confirmed + rv.Dismissed + len(contests)
	conn, err := clickhouse.Connect(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := waitUntil(ctx, time.Minute, func() bool {
		var n uint64
		return conn.QueryRow(ctx, "SELECT count() FROM "+cfg.ClickHouse.Database+".dispositions FINAL").Scan(&n) == nil && n >= uint64(want)
	}); err != nil {
		return fmt.Errorf("the dispositions did not reach ClickHouse: %w", err)
	}
	outcomes, err := r.Outcomes(ctx, 0, 0)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "\nwhat people decided, per district (qfence outcomes; GET /v1/outcomes):")
	return writeOutcomes(out, outcomes)
}

// keep leaves everything running until ctx ends (Ctrl-C), after printing
// where a person can look.
func keep(ctx context.Context, base, token string, events []sim.Event, out io.Writer) {
	dossierOf := ""
	for _, e := range events {
		if e.Type == "breach_escalated" {
			dossierOf = e.EventID
			break
		}
	}
	fmt.Fprintf(out, "\nkept running (Ctrl-C ends it and cleans up). Every request needs the reviewer token: send the header\n"+
		"  Authorization: Bearer %s\n(a browser extension that sets request headers does it; or curl):\n"+
		"  review queue: %s/v1/review\n  curl -H 'Authorization: Bearer %s' %s/v1/review > queue.html\n", token, base, token, base)
	if dossierOf != "" {
		fmt.Fprintf(out, "  a dossier:    %s/v1/events/%s/dossier\n  curl -H 'Authorization: Bearer %s' %s/v1/events/%s/dossier > dossier.html\n",
			base, dossierOf, token, base, dossierOf)
	}
	<-ctx.Done()
	fmt.Fprintln(out, "stopping")
}

// compare prints a table of two columns under a title: what a part of
// the system is worth, with it and without it.
func compare(out io.Writer, title, a, b string, rows ...[3]string) {
	fmt.Fprintf(out, "\n%s:\n  %-45s %8s %8s\n", title, "", a, b)
	for _, r := range rows {
		fmt.Fprintf(out, "  %-45s %8s %8s\n", r[0], r[1], r[2])
	}
}

// simEvents are the engine's events as the scorer reads them.
func simEvents(l *sim.Loop) []sim.Event {
	out := make([]sim.Event, 0, len(l.Events))
	for i := range l.Events {
		var e sim.Event
		if json.Unmarshal(l.Events[i].AppendJSON(nil, &l.Rules), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// story picks the first patient (in id order) whose events match.
func story(byPatient map[string][][]byte, s *sim.Scenario, match func(string, []sim.Event) bool) string {
	for _, id := range slices.Sorted(maps.Keys(byPatient)) {
		var evs []sim.Event
		for _, v := range byPatient[id] {
			var e sim.Event
			if json.Unmarshal(v, &e) == nil && e.Type != "" {
				evs = append(evs, e)
			}
		}
		if match(id, evs) {
			return id
		}
	}
	return ""
}

func count(evs []sim.Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func has(evs []sim.Event, typ, reason string) bool {
	return slices.ContainsFunc(evs, func(e sim.Event) bool { return e.Type == typ && (reason == "" || e.Reason == reason) })
}

// printStory prints a patient's events and notifications in time order,
// one line each.
func printStory(out io.Writer, records [][]byte) {
	type line struct{ at, text string }
	var lines []line
	for _, v := range records {
		var r struct {
			Type, Kind, At, Reason, Text string
			ExpiresAt                    string  `json:"expires_at"`
			DistanceM                    float64 `json:"distance_m"`
			Mislocation                  *struct {
				RadiusM float64 `json:"radius_m"`
				ValidTo string  `json:"valid_to"`
			} `json:"mislocation"`
		}
		if json.Unmarshal(v, &r) != nil {
			continue
		}
		text := fmt.Sprintf("%s  notification %-17s %q", hhmm(r.At), r.Kind, r.Text)
		if r.Kind == "" {
			text = fmt.Sprintf("%s  event %-24s", hhmm(r.At), r.Type)
			if r.Reason != "" {
				text += " reason " + r.Reason
			}
			if r.ExpiresAt != "" {
				text += " expires " + hhmm(r.ExpiresAt)
			}
			if r.Type == "breach_started" || r.Type == "breach_escalated" {
				text += fmt.Sprintf(" %.0f m from home", r.DistanceM)
			}
			if m := r.Mislocation; m != nil {
				text += fmt.Sprintf(" a circle of %.0f m, %.0f m from home, in force to %s", m.RadiusM, r.DistanceM, m.ValidTo[:10])
			}
		}
		lines = append(lines, line{r.At, text})
	}
	slices.SortStableFunc(lines, func(a, b line) int { return strings.Compare(a.at, b.at) })
	for _, l := range lines {
		fmt.Fprintf(out, "  %s\n", l.text)
	}
}

// hhmm is the time of day of an RFC 3339 UTC time.
func hhmm(ts string) string {
	if len(ts) >= 19 {
		return ts[11:19]
	}
	return ts
}

func prettyEvent(v []byte) []byte {
	var pretty map[string]any
	_ = json.Unmarshal(v, &pretty)
	if ev, ok := pretty["evidence"].([]any); ok && len(ev) > 3 {
		pretty["evidence"] = append(ev[:3], fmt.Sprintf("… %d more", len(ev)-3))
	}
	b, _ := json.MarshalIndent(pretty, "  ", "  ")
	return b
}

// scanPass asks the API about one of the simulator's passes, as an
// officer's scanner would, and shows the request and the answer.
func scanPass(ctx context.Context, base, token string, s *sim.Scenario, out io.Writer) error {
	if len(s.Passes) == 0 {
		return nil
	}
	var p struct {
		PassID  string `json:"pass_id"`
		ValidTo string `json:"valid_to"`
	}
	for _, l := range s.Passes { // the pass valid longest: the likeliest still valid
		var q struct {
			PassID  string `json:"pass_id"`
			ValidTo string `json:"valid_to"`
		}
		if json.Unmarshal([]byte(l), &q) == nil && q.ValidTo > p.ValidTo && !strings.Contains(l, "revoked_at") {
			p = q
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/passes/"+p.PassID, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask the API: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Fprintf(out, "\na police scanner checks a pass through the API:\n  curl -H 'Authorization: Bearer $POLICE_TOKEN' %s/v1/passes/%s\n  %d %s",
		base, p.PassID, resp.StatusCode, body)
	return nil
}

func analystQueries(ctx context.Context, cfg config.ClickHouse, out io.Writer) error {
	conn, err := clickhouse.Connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	queries := []struct{ title, sql string }{
		{"breaches and time outside per district (the district_daily view)",
			"SELECT district, sum(breaches) AS breaches, sum(seconds_outside) AS seconds_outside FROM " + cfg.Database + ".district_daily GROUP BY district ORDER BY breaches DESC, district LIMIT 5"},
		{"stored pings by verdict",
			"SELECT toString(state) AS state, count() AS pings FROM " + cfg.Database + ".pings FINAL GROUP BY state ORDER BY pings DESC"},
		{"the farthest breaches (metres from home)",
			"SELECT patient_id, toString(max_distance_m) AS metres FROM " + cfg.Database + ".events FINAL WHERE type = 'breach_ended' ORDER BY max_distance_m DESC LIMIT 3"},
	}
	for _, q := range queries {
		fmt.Fprintf(out, "  %s:\n", q.title)
		rows, err := conn.Query(ctx, q.sql)
		if err != nil {
			return fmt.Errorf("%s: %w", q.sql, err)
		}
		cols := rows.ColumnTypes()
		var names []string
		for _, c := range cols {
			names = append(names, c.Name())
		}
		var table [][]string
		table = append(table, names)
		for rows.Next() {
			vals := make([]any, len(cols))
			for i, c := range cols {
				vals[i] = newScan(c.ScanType().String())
			}
			if err := rows.Scan(vals...); err != nil {
				rows.Close()
				return err
			}
			var parts []string
			for _, v := range vals {
				parts = append(parts, deref(v))
			}
			table = append(table, parts)
		}
		rows.Close()
		printTable(out, table)
	}
	return nil
}

// printTable prints rows as columns padded to their widest cell, the first
// row (the column names) underlined.
func printTable(out io.Writer, rows [][]string) {
	var width []int
	for _, r := range rows {
		for i, c := range r {
			if i == len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len(c))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			fmt.Fprintf(&b, "%-*s  ", width[i], c)
		}
		fmt.Fprintf(out, "    %s\n", strings.TrimRight(b.String(), " "))
	}
	for i, r := range rows {
		line(r)
		if i == 0 {
			dashes := make([]string, len(r))
			for j := range r {
				dashes[j] = strings.Repeat("-", width[j])
			}
			line(dashes)
		}
	}
}

// distinctValid counts the valid pings sent, once per (patient, ts): what
// ClickHouse must hold under FINAL (every patient has an active order).
func distinctValid(pings []sim.Ping) int {
	dec := processor.PingDecoder{MaxBytes: 4096}
	seen := map[string]bool{}
	var p processor.Ping
	for _, m := range pings {
		if dec.Decode(m.Value, 0, &p) == nil {
			seen[string(p.PatientID)+"|"+strconv.FormatInt(p.TS, 10)] = true
		}
	}
	return len(seen)
}

// storedOnce counts the pings table's rows, and its rows under FINAL.
func storedOnce(ctx context.Context, cfg config.ClickHouse) (rows, final uint64, err error) {
	conn, err := clickhouse.Connect(ctx, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".pings").Scan(&rows); err != nil {
		return 0, 0, err
	}
	err = conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".pings FINAL").Scan(&final)
	return rows, final, err
}

// knownMislocationRows counts the patient's stored pings in span that a
// learned circle made uncertain.
func knownMislocationRows(ctx context.Context, cfg config.ClickHouse, patient string, span [2]int64) (uint64, error) {
	conn, err := clickhouse.Connect(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var n uint64
	err = conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".pings FINAL WHERE patient_id = ? AND has(flags, 'known_mislocation') "+
		"AND ts >= toDateTime(?) AND ts <= toDateTime(?)", patient, span[0]/1000, span[1]/1000+1).Scan(&n)
	return n, err
}

func newScan(t string) any {
	switch t {
	case "uint64":
		return new(uint64)
	case "int64":
		return new(int64)
	}
	return new(string)
}

func deref(v any) string {
	switch x := v.(type) {
	case *uint64:
		return strconv.FormatUint(*x, 10)
	case *int64:
		return strconv.FormatInt(*x, 10)
	case *string:
		if *x == "" {
			return "(none)"
		}
		return *x
	}
	return fmt.Sprint(v)
}

func twoFreeAddrs() (string, string, error) {
	var addrs []string
	var ls []net.Listener
	for i := 0; i < 2; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", "", err
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return addrs[0], addrs[1], nil
}

func waitUntil(ctx context.Context, within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}
