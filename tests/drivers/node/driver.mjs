// The driver-tier checks for the Node.js driver (npm "mongodb").
//
// Usage: node driver.mjs MONGODB_URI AUTHOR
//
// Prints one JSON line per check {check, ok, detail} after a first line naming the
// driver and its version, and before a last line {done: true}. The data set is the
// documents of blog.blog_posts whose author is AUTHOR; the caller removes them first.
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, MongoServerError } from 'mongodb';

const require = createRequire(import.meta.url);
const DRIVER_VERSION = require('mongodb/package.json').version;
const DB = 'blog';
const COLL = 'blog_posts';
const MARKER = 'scaly:allow-global';
const GLOBAL_MSG = 'Some or all of the shard key was not specified.  Missing fields were title.';
const CURSOR_DOCS = 50;
const BATCH = 10;
const HEARTBEAT_MS = 500;
const HEARTBEAT_WAIT_MS = 3000;

class CheckFailed extends Error {
  name = 'CheckFailed';
}

function expect(cond, what) {
  if (!cond) throw new CheckFailed(what);
}

function emit(fields) {
  process.stdout.write(JSON.stringify(fields) + '\n');
}

function doc(author, title, extra = {}) {
  return { author, title, body: `${title} by ${author}`, unique_views: 1, ...extra };
}

// [code, codeName, errmsg] of the server error reply carried by the driver's error.
function serverError(err) {
  expect(err instanceof MongoServerError, `not a MongoServerError: ${err?.name}: ${err?.message}`);
  const reply = err.errorResponse ?? {};
  return [err.code, err.codeName ?? reply.codeName, reply.errmsg ?? err.message];
}

class Recorder {
  constructor(client) {
    this.commands = [];
    this.beatsOk = 0;
    this.beatsFailed = 0;
    this.beatsAwaited = 0;
    client.on('commandStarted', (e) => this.commands.push([e.commandName, e.command]));
    client.on('serverHeartbeatSucceeded', (e) => {
      this.beatsOk += 1;
      this.beatsAwaited += e.awaited ? 1 : 0;
    });
    client.on('serverHeartbeatFailed', () => { this.beatsFailed += 1; });
  }

  namesSince(mark) {
    return this.commands.slice(mark).map(([name]) => name);
  }
}

class Run {
  constructor(client, rec, author) {
    this.client = client;
    this.rec = rec;
    this.author = author;
    this.coll = client.db(DB).collection(COLL);
    this.titles = new Set();
    this.streaming = false; // the server's hello offers streaming (has topologyVersion)
  }

  async connect() {
    await this.client.connect();
    const ping = await this.client.db('admin').command({ ping: 1 });
    expect(ping.ok === 1, `ping replied ${JSON.stringify(ping)}`);
    const hello = await this.client.db('admin').command({ hello: 1 });
    this.streaming = hello.topologyVersion !== undefined;
    return `appName set; ping ok; maxWireVersion=${hello.maxWireVersion}`;
  }

  async insert() {
    const first = doc(this.author, 'first', { comments: [{ author: 'ann', comment: 'hi', rank: 1 }] });
    const res = await this.coll.insertOne(first);
    expect(res.acknowledged && res.insertedId, 'insertOne not acknowledged');
    const many = Array.from({ length: CURSOR_DOCS }, (_, i) => doc(this.author, `c${String(i).padStart(2, '0')}`));
    const res2 = await this.coll.insertMany(many);
    expect(res2.insertedCount === CURSOR_DOCS, `insertMany stored ${res2.insertedCount}`);
    this.titles.add('first');
    many.forEach((d) => this.titles.add(d.title));
    return `insertOne + insertMany(${CURSOR_DOCS})`;
  }

  async find_shard_key() {
    const found = await this.coll.findOne({ author: this.author, title: 'first' });
    expect(found !== null, 'findOne by (author, title) found nothing');
    expect(found.comments[0].rank === 1, `unexpected document ${JSON.stringify(found)}`);
    return 'findOne({author, title}) returned the document';
  }

  async cursor_getmore() {
    const titles = Array.from({ length: CURSOR_DOCS }, (_, i) => `c${String(i).padStart(2, '0')}`);
    const mark = this.rec.commands.length;
    const docs = await this.coll.find({ author: this.author, title: { $in: titles } }).batchSize(BATCH).toArray();
    const getMores = this.rec.namesSince(mark).filter((n) => n === 'getMore').length;
    expect(docs.length === CURSOR_DOCS, `cursor returned ${docs.length} documents`);
    expect(getMores >= CURSOR_DOCS / BATCH - 1, `only ${getMores} getMore commands`);
    return `${docs.length} documents, batchSize ${BATCH}, ${getMores} getMores`;
  }

  async update() {
    const key = { author: this.author, title: 'first' };
    const res = await this.coll.updateOne(key, { $set: { body: 'edited' }, $inc: { unique_views: 1 } });
    expect(res.matchedCount === 1 && res.modifiedCount === 1, `matched ${res.matchedCount}`);
    const after = await this.coll.findOne(key);
    expect(after.body === 'edited' && after.unique_views === 2, `after update: ${JSON.stringify(after)}`);
    return 'updateOne by shard key: $set + $inc applied';
  }

  async delete() {
    const key = { author: this.author, title: 'c49' };
    const res = await this.coll.deleteOne(key);
    expect(res.deletedCount === 1, `deleted ${res.deletedCount}`);
    expect((await this.coll.findOne(key)) === null, 'document still there');
    this.titles.delete('c49');
    return 'deleteOne by shard key';
  }

  async session() {
    const session = this.client.startSession({ causalConsistency: true });
    const mark = this.rec.commands.length;
    let got;
    try {
      await this.coll.insertOne(doc(this.author, 'session'), { session });
      got = await this.coll.findOne({ author: this.author, title: 'session' }, { session });
    } finally {
      await session.endSession();
    }
    expect(got !== null, "the session's read did not see its write");
    const sent = this.rec.commands.slice(mark).filter(([n]) => n === 'insert' || n === 'find');
    expect(sent.length >= 2 && sent.every(([, cmd]) => cmd.lsid), 'no lsid sent');
    this.titles.add('session');
    return 'causally consistent session: insert then find with the same lsid';
  }

  async transaction() {
    const session = this.client.startSession();
    try {
      session.startTransaction();
      try {
        await this.coll.insertOne(doc(this.author, 'txn'), { session });
        await session.commitTransaction();
      } catch (err) {
        await session.abortTransaction().catch(() => {});
        return await this.txnRefused(err);
      }
    } finally {
      await session.endSession();
    }
    expect((await this.coll.findOne({ author: this.author, title: 'txn' })) !== null, 'lost');
    this.titles.add('txn');
    return 'transaction committed';
  }

  async txnRefused(err) {
    const [code, name, msg] = serverError(err);
    expect(!String(name).startsWith('Scaly'), `the proxy refused the transaction: ${name}`);
    const ping = await this.client.db('admin').command({ ping: 1 });
    expect(ping.ok === 1, 'connection unusable after the refused transaction');
    const found = await this.coll.findOne({ author: this.author, title: 'txn' });
    expect(found === null, 'a refused transaction wrote its document');
    return {
      detail: 'server error relayed, client still usable',
      backend_limit: `backend has no transactions: ${name} (${code}): ${msg}`,
    };
  }

  async global_refused() {
    const mark = this.rec.commands.length;
    let err;
    try {
      await this.coll.findOne({ author: this.author });
    } catch (e) {
      err = e;
    }
    expect(err !== undefined, 'the global query was not refused');
    const [code, name, msg] = serverError(err);
    expect(code === 29001 && name === 'ScalyGlobalQuery', `got ${code} ${name}`);
    expect(msg === GLOBAL_MSG, `errmsg ${JSON.stringify(msg)}`);
    const sent = this.rec.namesSince(mark).filter((n) => n === 'find').length;
    expect(sent === 1, `the driver sent the refused find ${sent} times`);
    return `${err.name} code ${code} ${name}: ${msg} (not retried)`;
  }

  async global_allowed() {
    const docs = await this.coll.find({ author: this.author }, { comment: MARKER }).toArray();
    const got = new Set(docs.map((d) => d.title));
    const same = got.size === this.titles.size && [...got].every((t) => this.titles.has(t));
    expect(same, `expected ${this.titles.size} titles, got ${got.size}`);
    return `comment=${JSON.stringify(MARKER)}: ${got.size} documents`;
  }

  async schema_refused() {
    const bad = doc(this.author, 'bad-schema', { unique_views: 'lots' });
    const seen = await this.refusedInsert(() => this.coll.insertOne(bad), [bad]);
    return `insertOne: ${seen}; nothing written`;
  }

  async schema_batch_refused() {
    const batch = [doc(this.author, 'batch-ok'), doc(this.author, 'batch-bad', { unique_views: 'lots' })];
    const seen = await this.refusedInsert(() => this.coll.insertMany(batch), batch);
    return `insertMany(good, bad): ${seen}; nothing written`;
  }

  async refusedInsert(call, docs) {
    let err;
    try {
      await call();
    } catch (e) {
      err = e;
    }
    expect(err !== undefined, 'the insert was not refused');
    const [code, name, msg] = serverError(err);
    expect(!err.hasErrorLabel('RetryableWriteError'), 'labelled RetryableWriteError');
    expect(code === 29003 && name === 'ScalySchemaViolation', `got ${code} ${name}: ${msg}`);
    for (const d of docs) {
      const left = await this.coll.findOne({ author: this.author, title: d.title });
      expect(left === null, `${d.title} was written`);
    }
    return `${err.name} code ${code} ${name}: ${msg}`;
  }

  async heartbeats(started) {
    const before = this.rec.beatsOk;
    await sleep(HEARTBEAT_WAIT_MS);
    const during = this.rec.beatsOk - before;
    expect(during >= 3, `only ${during} heartbeats in ${HEARTBEAT_WAIT_MS} ms`);
    expect(this.rec.beatsFailed === 0, `${this.rec.beatsFailed} heartbeats failed`);
    expect(this.rec.beatsAwaited > 0 || !this.streaming, 'hello has topologyVersion but no heartbeat streamed');
    const ping = await this.client.db('admin').command({ ping: 1 });
    expect(ping.ok === 1, 'ping after the wait failed');
    const mode = this.rec.beatsAwaited ? 'streaming' : 'polling';
    const total = ((Date.now() - started) / 1000).toFixed(1);
    return `${during} heartbeats in ${HEARTBEAT_WAIT_MS / 1000}s (${mode}, ${this.rec.beatsAwaited} awaited), connected ${total}s`;
  }
}

const CHECKS = [
  'connect', 'insert', 'find_shard_key', 'cursor_getmore', 'update', 'delete', 'session',
  'transaction', 'global_refused', 'global_allowed', 'schema_refused', 'schema_batch_refused',
  'heartbeats',
];

async function main() {
  const [uri, author] = process.argv.slice(2);
  if (!uri || !author) {
    process.stderr.write('usage: node driver.mjs MONGODB_URI AUTHOR\n');
    process.exit(2);
  }
  emit({ driver: 'Node.js driver (mongodb)', version: DRIVER_VERSION, runtime: `Node.js ${process.versions.node}` });
  const started = Date.now();
  const client = new MongoClient(uri, {
    appName: `scaly-driver-${author}`,
    heartbeatFrequencyMS: HEARTBEAT_MS,
    serverSelectionTimeoutMS: 10000,
    monitorCommands: true,
  });
  const run = new Run(client, new Recorder(client), author);
  try {
    for (const name of CHECKS) {
      try {
        const result = await run[name](started);
        emit({ check: name, ok: true, ...(typeof result === 'string' ? { detail: result } : result) });
      } catch (err) {
        emit({ check: name, ok: false, detail: `${err?.name}: ${err?.message}` });
        if (name === 'connect') break;
      }
    }
  } finally {
    await client.close();
  }
  emit({ done: true });
}

await main();
