// Command godriver runs the driver-tier checks with the Go driver
// (go.mongodb.org/mongo-driver/v2) against a MongoDB URI, normally scalyproxy's.
//
// Usage: godriver MONGODB_URI AUTHOR
//
// It prints one JSON line per check {check, ok, detail} after a first line naming
// the driver and its version, and before a last line {done: true}. The data set is
// the documents of blog.blog_posts whose author is AUTHOR; the caller removes them first.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

const (
	dbName        = "blog"
	collName      = "blog_posts"
	marker        = "scaly:allow-global"
	globalMsg     = "Some or all of the shard key was not specified.  Missing fields were title."
	cursorDocs    = 50
	batch         = 10
	heartbeat     = 500 * time.Millisecond
	heartbeatWait = 3 * time.Second
	modulePath    = "go.mongodb.org/mongo-driver/v2"
)

// result is what one check reports besides its name and ok.
type result struct {
	Detail       string
	BackendLimit string
}

func emit(fields map[string]any) {
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
}

func expect(cond bool, format string, args ...any) error {
	if cond {
		return nil
	}
	return fmt.Errorf(format, args...)
}

// recorder counts what the client sent and how its monitor's heartbeats went.
type recorder struct {
	mu       sync.Mutex
	commands []sentCommand
	beatsOK  int
	failed   int
	awaited  int
}

type sentCommand struct {
	name    string
	hasLsid bool
}

func (r *recorder) started(_ context.Context, e *event.CommandStartedEvent) {
	_, err := e.Command.LookupErr("lsid")
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commands = append(r.commands, sentCommand{e.CommandName, err == nil})
}

func (r *recorder) beat(e *event.ServerHeartbeatSucceededEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.beatsOK++
	if e.Awaited {
		r.awaited++
	}
}

func (r *recorder) beatFailed(*event.ServerHeartbeatFailedEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed++
}

func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.commands)
}

func (r *recorder) since(mark int) []sentCommand {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sentCommand(nil), r.commands[mark:]...)
}

func (r *recorder) count(mark int, name string) int {
	n := 0
	for _, c := range r.since(mark) {
		if c.name == name {
			n++
		}
	}
	return n
}

type run struct {
	ctx     context.Context
	client  *mongo.Client
	coll    *mongo.Collection
	rec     *recorder
	author  string
	titles  map[string]bool
	started time.Time
	// streaming is whether the server's hello offers streaming (has topologyVersion)
	streaming bool
}

func doc(author, title string) bson.D {
	return bson.D{
		{Key: "author", Value: author}, {Key: "title", Value: title},
		{Key: "body", Value: title + " by " + author}, {Key: "unique_views", Value: int32(1)},
	}
}

// with returns d with key set to value (replaced in place, or appended).
func with(d bson.D, key string, value any) bson.D {
	for i := range d {
		if d[i].Key == key {
			d[i].Value = value
			return d
		}
	}
	return append(d, bson.E{Key: key, Value: value})
}

func cursorTitles() []string {
	out := make([]string, cursorDocs)
	for i := range out {
		out[i] = fmt.Sprintf("c%02d", i)
	}
	return out
}

func (r *run) key(title string) bson.D {
	return bson.D{{Key: "author", Value: r.author}, {Key: "title", Value: title}}
}

func (r *run) ping() error {
	return r.client.Database("admin").RunCommand(r.ctx, bson.D{{Key: "ping", Value: 1}}).Err()
}

// findTitle returns whether a document with this author and title is stored.
func (r *run) findTitle(title string) (bool, error) {
	err := r.coll.FindOne(r.ctx, r.key(title)).Err()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	return err == nil, err
}

// serverError unwraps the driver's server error and returns code, codeName, errmsg.
func serverError(err error) (int32, string, string, error) {
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		return ce.Code, ce.Name, ce.Message, nil
	}
	var we mongo.WriteException
	if errors.As(err, &we) && len(we.Raw) > 0 {
		return rawError(we.Raw)
	}
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && len(bwe.WriteErrors) > 0 {
		w := bwe.WriteErrors[0]
		return int32(w.Code), "", w.Message, nil
	}
	return 0, "", "", fmt.Errorf("not a server error (%T): %v", err, err)
}

func rawError(raw bson.Raw) (int32, string, string, error) {
	var reply struct {
		Code     int32  `bson:"code"`
		CodeName string `bson:"codeName"`
		Errmsg   string `bson:"errmsg"`
	}
	if err := bson.Unmarshal(raw, &reply); err != nil {
		return 0, "", "", err
	}
	return reply.Code, reply.CodeName, reply.Errmsg, nil
}

func (r *run) connect() (result, error) {
	if err := r.ping(); err != nil {
		return result{}, err
	}
	var hello bson.M
	err := r.client.Database("admin").RunCommand(r.ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello)
	_, r.streaming = hello["topologyVersion"]
	return result{Detail: fmt.Sprintf("appName set; ping ok; maxWireVersion=%v", hello["maxWireVersion"])}, err
}

func (r *run) insert() (result, error) {
	comments := bson.A{bson.D{{Key: "author", Value: "ann"}, {Key: "comment", Value: "hi"}, {Key: "rank", Value: int32(1)}}}
	if _, err := r.coll.InsertOne(r.ctx, with(doc(r.author, "first"), "comments", comments)); err != nil {
		return result{}, err
	}
	many := make([]any, 0, cursorDocs)
	for _, t := range cursorTitles() {
		many = append(many, doc(r.author, t))
	}
	res, err := r.coll.InsertMany(r.ctx, many)
	if err != nil {
		return result{}, err
	}
	if err := expect(len(res.InsertedIDs) == cursorDocs, "InsertMany stored %d", len(res.InsertedIDs)); err != nil {
		return result{}, err
	}
	r.titles["first"] = true
	for _, t := range cursorTitles() {
		r.titles[t] = true
	}
	return result{Detail: fmt.Sprintf("InsertOne + InsertMany(%d)", cursorDocs)}, nil
}

func (r *run) findShardKey() (result, error) {
	var found struct {
		Comments []struct {
			Rank int32 `bson:"rank"`
		} `bson:"comments"`
	}
	if err := r.coll.FindOne(r.ctx, r.key("first")).Decode(&found); err != nil {
		return result{}, err
	}
	err := expect(len(found.Comments) == 1 && found.Comments[0].Rank == 1, "unexpected document %+v", found)
	return result{Detail: "FindOne({author, title}) returned the document"}, err
}

func (r *run) cursorGetMore() (result, error) {
	mark := r.rec.mark()
	filter := bson.D{{Key: "author", Value: r.author}, {Key: "title", Value: bson.D{{Key: "$in", Value: cursorTitles()}}}}
	cur, err := r.coll.Find(r.ctx, filter, options.Find().SetBatchSize(batch))
	if err != nil {
		return result{}, err
	}
	var docs []bson.M
	if err := cur.All(r.ctx, &docs); err != nil {
		return result{}, err
	}
	getMores := r.rec.count(mark, "getMore")
	if err := expect(len(docs) == cursorDocs, "cursor returned %d documents", len(docs)); err != nil {
		return result{}, err
	}
	err = expect(getMores >= cursorDocs/batch-1, "only %d getMore commands", getMores)
	return result{Detail: fmt.Sprintf("%d documents, batchSize %d, %d getMores", len(docs), batch, getMores)}, err
}

func (r *run) update() (result, error) {
	change := bson.D{
		{Key: "$set", Value: bson.D{{Key: "body", Value: "edited"}}},
		{Key: "$inc", Value: bson.D{{Key: "unique_views", Value: int32(1)}}},
	}
	res, err := r.coll.UpdateOne(r.ctx, r.key("first"), change)
	if err != nil {
		return result{}, err
	}
	if err := expect(res.MatchedCount == 1 && res.ModifiedCount == 1, "matched %d", res.MatchedCount); err != nil {
		return result{}, err
	}
	var after struct {
		Body  string `bson:"body"`
		Views int32  `bson:"unique_views"`
	}
	if err := r.coll.FindOne(r.ctx, r.key("first")).Decode(&after); err != nil {
		return result{}, err
	}
	err = expect(after.Body == "edited" && after.Views == 2, "after update: %+v", after)
	return result{Detail: "UpdateOne by shard key: $set + $inc applied"}, err
}

func (r *run) deleteOne() (result, error) {
	res, err := r.coll.DeleteOne(r.ctx, r.key("c49"))
	if err != nil {
		return result{}, err
	}
	if err := expect(res.DeletedCount == 1, "deleted %d", res.DeletedCount); err != nil {
		return result{}, err
	}
	there, err := r.findTitle("c49")
	if err == nil {
		err = expect(!there, "document still there")
	}
	delete(r.titles, "c49")
	return result{Detail: "DeleteOne by shard key"}, err
}

func (r *run) session() (result, error) {
	sess, err := r.client.StartSession(options.Session().SetCausalConsistency(true))
	if err != nil {
		return result{}, err
	}
	defer sess.EndSession(r.ctx)
	mark := r.rec.mark()
	sctx := mongo.NewSessionContext(r.ctx, sess)
	if _, err := r.coll.InsertOne(sctx, doc(r.author, "session")); err != nil {
		return result{}, err
	}
	if err := r.coll.FindOne(sctx, r.key("session")).Err(); err != nil {
		return result{}, fmt.Errorf("the session's read did not see its write: %w", err)
	}
	for _, c := range r.rec.since(mark) {
		if (c.name == "insert" || c.name == "find") && !c.hasLsid {
			return result{}, fmt.Errorf("%s sent without lsid", c.name)
		}
	}
	r.titles["session"] = true
	return result{Detail: "causally consistent session: insert then find with the same lsid"}, nil
}

func (r *run) transaction() (result, error) {
	sess, err := r.client.StartSession()
	if err != nil {
		return result{}, err
	}
	defer sess.EndSession(r.ctx)
	if err := sess.StartTransaction(); err != nil {
		return result{}, err
	}
	sctx := mongo.NewSessionContext(r.ctx, sess)
	_, err = r.coll.InsertOne(sctx, doc(r.author, "txn"))
	if err == nil {
		err = sess.CommitTransaction(sctx)
	}
	if err != nil {
		_ = sess.AbortTransaction(sctx)
		return r.txnRefused(err)
	}
	there, err := r.findTitle("txn")
	if err == nil {
		err = expect(there, "the committed document is missing")
	}
	r.titles["txn"] = true
	return result{Detail: "transaction committed"}, err
}

func (r *run) txnRefused(txnErr error) (result, error) {
	code, name, msg, err := serverError(txnErr)
	if err != nil {
		return result{}, err
	}
	if strings.HasPrefix(name, "Scaly") {
		return result{}, fmt.Errorf("the proxy refused the transaction: %s", name)
	}
	if err := r.ping(); err != nil {
		return result{}, fmt.Errorf("connection unusable after the refused transaction: %w", err)
	}
	there, err := r.findTitle("txn")
	if err == nil {
		err = expect(!there, "a refused transaction wrote its document")
	}
	limit := fmt.Sprintf("backend has no transactions: %s (%d): %s", name, code, msg)
	return result{Detail: "server error relayed, client still usable", BackendLimit: limit}, err
}

func (r *run) globalRefused() (result, error) {
	mark := r.rec.mark()
	findErr := r.coll.FindOne(r.ctx, bson.D{{Key: "author", Value: r.author}}).Err()
	if findErr == nil || errors.Is(findErr, mongo.ErrNoDocuments) {
		return result{}, fmt.Errorf("the global query was not refused")
	}
	code, name, msg, err := serverError(findErr)
	if err != nil {
		return result{}, err
	}
	if err := expect(code == 29001 && name == "ScalyGlobalQuery", "got %d %s", code, name); err != nil {
		return result{}, err
	}
	if err := expect(msg == globalMsg, "errmsg %q", msg); err != nil {
		return result{}, err
	}
	sent := r.rec.count(mark, "find")
	err = expect(sent == 1, "the driver sent the refused find %d times", sent)
	return result{Detail: fmt.Sprintf("%T code %d %s: %s (not retried)", findErr, code, name, msg)}, err
}

func (r *run) globalAllowed() (result, error) {
	cur, err := r.coll.Find(r.ctx, bson.D{{Key: "author", Value: r.author}}, options.Find().SetComment(marker))
	if err != nil {
		return result{}, err
	}
	var docs []struct {
		Title string `bson:"title"`
	}
	if err := cur.All(r.ctx, &docs); err != nil {
		return result{}, err
	}
	got := map[string]bool{}
	for _, d := range docs {
		got[d.Title] = true
	}
	same := len(got) == len(r.titles)
	for t := range got {
		same = same && r.titles[t]
	}
	err = expect(same, "expected %d titles, got %d", len(r.titles), len(got))
	return result{Detail: fmt.Sprintf("SetComment(%q): %d documents", marker, len(got))}, err
}

func (r *run) schemaRefused() (result, error) {
	bad := with(doc(r.author, "bad-schema"), "unique_views", "lots")
	_, insertErr := r.coll.InsertOne(r.ctx, bad)
	seen, err := r.refused(insertErr, "bad-schema")
	return result{Detail: "InsertOne: " + seen + "; nothing written"}, err
}

func (r *run) schemaBatchRefused() (result, error) {
	bad := with(doc(r.author, "batch-bad"), "unique_views", "lots")
	_, insertErr := r.coll.InsertMany(r.ctx, []any{doc(r.author, "batch-ok"), bad})
	seen, err := r.refused(insertErr, "batch-ok", "batch-bad")
	return result{Detail: "InsertMany(good, bad): " + seen + "; nothing written"}, err
}

func (r *run) refused(insertErr error, titles ...string) (string, error) {
	if insertErr == nil {
		return "", fmt.Errorf("the insert was not refused")
	}
	code, name, msg, err := serverError(insertErr)
	if err != nil {
		return "", err
	}
	var labelled mongo.ServerError
	if errors.As(insertErr, &labelled) && labelled.HasErrorLabel("RetryableWriteError") {
		return "", fmt.Errorf("labelled RetryableWriteError")
	}
	if err := expect(code == 29003 && name == "ScalySchemaViolation", "got %d %s: %s", code, name, msg); err != nil {
		return "", err
	}
	for _, t := range titles {
		there, err := r.findTitle(t)
		if err == nil {
			err = expect(!there, "%s was written", t)
		}
		if err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%T code %d %s: %s", insertErr, code, name, msg), nil
}

func (r *run) heartbeats() (result, error) {
	r.rec.mu.Lock()
	before := r.rec.beatsOK
	r.rec.mu.Unlock()
	time.Sleep(heartbeatWait)
	r.rec.mu.Lock()
	during, failed, awaited := r.rec.beatsOK-before, r.rec.failed, r.rec.awaited
	r.rec.mu.Unlock()
	if err := expect(during >= 3, "only %d heartbeats in %s", during, heartbeatWait); err != nil {
		return result{}, err
	}
	if err := expect(failed == 0, "%d heartbeats failed", failed); err != nil {
		return result{}, err
	}
	if err := expect(awaited > 0 || !r.streaming, "hello has topologyVersion but no heartbeat streamed"); err != nil {
		return result{}, err
	}
	mode := "polling"
	if awaited > 0 {
		mode = "streaming"
	}
	detail := fmt.Sprintf("%d heartbeats in %s (%s, %d awaited), connected %.1fs",
		during, heartbeatWait, mode, awaited, time.Since(r.started).Seconds())
	return result{Detail: detail}, r.ping()
}

func driverVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == modulePath {
				return strings.TrimPrefix(dep.Version, "v")
			}
		}
	}
	return "unknown"
}

func newClient(uri, author string, rec *recorder) (*mongo.Client, error) {
	opts := options.Client().ApplyURI(uri).
		SetAppName("scaly-driver-" + author).
		SetHeartbeatInterval(heartbeat).
		SetServerSelectionTimeout(10 * time.Second).
		SetMonitor(&event.CommandMonitor{Started: rec.started}).
		SetServerMonitor(&event.ServerMonitor{ServerHeartbeatSucceeded: rec.beat, ServerHeartbeatFailed: rec.beatFailed})
	return mongo.Connect(opts)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: godriver MONGODB_URI AUTHOR")
		os.Exit(2)
	}
	uri, author := os.Args[1], os.Args[2]
	emit(map[string]any{"driver": "Go driver (mongo-driver/v2)", "version": driverVersion(), "runtime": runtime.Version()})
	rec := &recorder{}
	started := time.Now()
	client, err := newClient(uri, author, rec)
	if err != nil {
		emit(map[string]any{"check": "connect", "ok": false, "detail": err.Error()})
		emit(map[string]any{"done": true})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	defer func() { _ = client.Disconnect(context.Background()) }()
	r := &run{ctx: ctx, client: client, coll: client.Database(dbName).Collection(collName),
		rec: rec, author: author, titles: map[string]bool{}, started: started}
	runChecks(r)
	emit(map[string]any{"done": true})
}

func runChecks(r *run) {
	checks := []struct {
		name string
		fn   func() (result, error)
	}{
		{"connect", r.connect}, {"insert", r.insert}, {"find_shard_key", r.findShardKey},
		{"cursor_getmore", r.cursorGetMore}, {"update", r.update}, {"delete", r.deleteOne},
		{"session", r.session}, {"transaction", r.transaction}, {"global_refused", r.globalRefused},
		{"global_allowed", r.globalAllowed}, {"schema_refused", r.schemaRefused},
		{"schema_batch_refused", r.schemaBatchRefused}, {"heartbeats", r.heartbeats},
	}
	for _, c := range checks {
		res, err := c.fn()
		if err != nil {
			emit(map[string]any{"check": c.name, "ok": false, "detail": err.Error()})
			if c.name == "connect" {
				return
			}
			continue
		}
		line := map[string]any{"check": c.name, "ok": true, "detail": res.Detail}
		if res.BackendLimit != "" {
			line["backend_limit"] = res.BackendLimit
		}
		emit(line)
	}
}
