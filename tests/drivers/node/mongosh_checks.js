// The driver-tier checks for the MongoDB shell (npm "mongosh"), run as
//   SCALY_DRIVER_AUTHOR=AUTHOR mongosh 'URI/?appName=...&heartbeatFrequencyMS=500&monitorCommands=true' \
//     --quiet --file mongosh_checks.js
// Prints one JSON line per check {check, ok, detail} after a first line naming the
// shell and its version, and before a last line {done: true}.
//
// Everything is done with shell commands a user would type, except the counting of
// getMore commands and heartbeats: the shell has no command for those, so they are
// read from the events of the Node.js client inside mongosh (a pinned internal API).

const AUTHOR = process.env.SCALY_DRIVER_AUTHOR;
const MARKER = 'scaly:allow-global';
const GLOBAL_MSG = 'Some or all of the shard key was not specified.  Missing fields were title.';
const CURSOR_DOCS = 50;
const BATCH = 10;
const HEARTBEAT_WAIT_MS = 3000;

const blog = db.getSiblingDB('blog');
const coll = blog.blog_posts;
const titles = new Set();
const rec = { commands: [], beatsOk: 0, beatsFailed: 0, beatsAwaited: 0 };
let streaming = false; // the server's hello offers streaming (has topologyVersion)

function emit(fields) {
  print(JSON.stringify(fields));
}

function expect(cond, what) {
  if (!cond) throw new Error(what);
}

function doc(title, extra) {
  return Object.assign({ author: AUTHOR, title: title, body: title + ' by ' + AUTHOR, unique_views: 1 }, extra || {});
}

function cursorTitles() {
  const out = [];
  for (let i = 0; i < CURSOR_DOCS; i++) out.push('c' + String(i).padStart(2, '0'));
  return out;
}

// Names on the error's prototype chain: the shell's errors come from another realm,
// so `instanceof` cannot be used.
function classNames(err) {
  const names = [];
  for (let p = Object.getPrototypeOf(err); p; p = Object.getPrototypeOf(p)) {
    if (p.constructor && p.constructor.name) names.push(p.constructor.name);
  }
  return names;
}

function serverError(err) {
  expect(classNames(err).includes('MongoServerError'), 'not a MongoServerError: ' + err.name + ': ' + err.message);
  const reply = err.errorResponse || {};
  return [err.code, err.codeName || reply.codeName, reply.errmsg || err.message];
}

function thrown(fn) {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

function watchClient() {
  const client = db.getMongo()._serviceProvider.mongoClient;
  expect(client.options.monitorCommands, 'monitorCommands=true missing from the connection string');
  client.on('commandStarted', (e) => rec.commands.push([e.commandName, Boolean(e.command.lsid)]));
  client.on('serverHeartbeatSucceeded', (e) => { rec.beatsOk++; if (e.awaited) rec.beatsAwaited++; });
  client.on('serverHeartbeatFailed', () => { rec.beatsFailed++; });
}

const checks = {
  connect() {
    watchClient();
    expect(db.adminCommand({ ping: 1 }).ok === 1, 'ping failed');
    const hello = db.adminCommand({ hello: 1 });
    streaming = hello.topologyVersion !== undefined;
    return 'appName set; ping ok; maxWireVersion=' + hello.maxWireVersion;
  },
  insert() {
    const res = coll.insertOne(doc('first', { comments: [{ author: 'ann', comment: 'hi', rank: 1 }] }));
    expect(res.acknowledged && res.insertedId, 'insertOne not acknowledged');
    const many = cursorTitles().map((t) => doc(t));
    const res2 = coll.insertMany(many);
    expect(Object.keys(res2.insertedIds).length === CURSOR_DOCS, 'insertMany stored too few');
    titles.add('first');
    many.forEach((d) => titles.add(d.title));
    return 'insertOne + insertMany(' + CURSOR_DOCS + ')';
  },
  find_shard_key() {
    const found = coll.findOne({ author: AUTHOR, title: 'first' });
    expect(found !== null, 'findOne by (author, title) found nothing');
    expect(found.comments[0].rank === 1, 'unexpected document ' + JSON.stringify(found));
    return 'findOne({author, title}) returned the document';
  },
  cursor_getmore() {
    const mark = rec.commands.length;
    const docs = coll.find({ author: AUTHOR, title: { $in: cursorTitles() } }).batchSize(BATCH).toArray();
    const getMores = rec.commands.slice(mark).filter(([n]) => n === 'getMore').length;
    expect(docs.length === CURSOR_DOCS, 'cursor returned ' + docs.length + ' documents');
    expect(getMores >= CURSOR_DOCS / BATCH - 1, 'only ' + getMores + ' getMore commands');
    return docs.length + ' documents, batchSize ' + BATCH + ', ' + getMores + ' getMores';
  },
  update() {
    const key = { author: AUTHOR, title: 'first' };
    const res = coll.updateOne(key, { $set: { body: 'edited' }, $inc: { unique_views: 1 } });
    expect(res.matchedCount === 1 && res.modifiedCount === 1, 'matched ' + res.matchedCount);
    const after = coll.findOne(key);
    expect(after.body === 'edited' && after.unique_views === 2, 'after update: ' + JSON.stringify(after));
    return 'updateOne by shard key: $set + $inc applied';
  },
  delete() {
    const key = { author: AUTHOR, title: 'c49' };
    const res = coll.deleteOne(key);
    expect(res.deletedCount === 1, 'deleted ' + res.deletedCount);
    expect(coll.findOne(key) === null, 'document still there');
    titles.delete('c49');
    return 'deleteOne by shard key';
  },
  session() {
    const session = db.getMongo().startSession({ causalConsistency: true });
    const mark = rec.commands.length;
    let got;
    try {
      const scoll = session.getDatabase('blog').blog_posts;
      scoll.insertOne(doc('session'));
      got = scoll.findOne({ author: AUTHOR, title: 'session' });
    } finally {
      session.endSession();
    }
    expect(got !== null, "the session's read did not see its write");
    const sent = rec.commands.slice(mark).filter(([n]) => n === 'insert' || n === 'find');
    expect(sent.length >= 2 && sent.every(([, lsid]) => lsid), 'no lsid sent');
    titles.add('session');
    return 'causally consistent session: insert then find with the same lsid';
  },
  transaction() {
    const session = db.getMongo().startSession();
    let err;
    try {
      session.startTransaction();
      err = thrown(() => {
        session.getDatabase('blog').blog_posts.insertOne(doc('txn'));
        session.commitTransaction();
      });
      if (err) thrown(() => session.abortTransaction());
    } finally {
      session.endSession();
    }
    if (!err) {
      expect(coll.findOne({ author: AUTHOR, title: 'txn' }) !== null, 'lost');
      titles.add('txn');
      return 'transaction committed';
    }
    const [code, name, msg] = serverError(err);
    expect(!String(name).startsWith('Scaly'), 'the proxy refused the transaction: ' + name);
    expect(db.adminCommand({ ping: 1 }).ok === 1, 'connection unusable after the refused transaction');
    expect(coll.findOne({ author: AUTHOR, title: 'txn' }) === null, 'a refused transaction wrote its document');
    return {
      detail: 'server error relayed, shell still usable',
      backend_limit: 'backend has no transactions: ' + name + ' (' + code + '): ' + msg,
    };
  },
  global_refused() {
    const mark = rec.commands.length;
    const err = thrown(() => coll.findOne({ author: AUTHOR }));
    expect(err !== undefined, 'the global query was not refused');
    const [code, name, msg] = serverError(err);
    expect(code === 29001 && name === 'ScalyGlobalQuery', 'got ' + code + ' ' + name);
    expect(msg === GLOBAL_MSG, 'errmsg ' + JSON.stringify(msg));
    const sent = rec.commands.slice(mark).filter(([n]) => n === 'find').length;
    expect(sent === 1, 'the shell sent the refused find ' + sent + ' times');
    return err.name + ' code ' + code + ' ' + name + ': ' + msg + ' (not retried)';
  },
  global_allowed() {
    const got = new Set(coll.find({ author: AUTHOR }).comment(MARKER).toArray().map((d) => d.title));
    const same = got.size === titles.size && [...got].every((t) => titles.has(t));
    expect(same, 'expected ' + titles.size + ' titles, got ' + got.size);
    return 'cursor.comment(' + JSON.stringify(MARKER) + '): ' + got.size + ' documents';
  },
  schema_refused() {
    const bad = doc('bad-schema', { unique_views: 'lots' });
    return 'insertOne: ' + refusedInsert(() => coll.insertOne(bad), [bad]) + '; nothing written';
  },
  schema_batch_refused() {
    const batch = [doc('batch-ok'), doc('batch-bad', { unique_views: 'lots' })];
    return 'insertMany(good, bad): ' + refusedInsert(() => coll.insertMany(batch), batch) + '; nothing written';
  },
  heartbeats() {
    const before = rec.beatsOk;
    sleep(HEARTBEAT_WAIT_MS);
    const during = rec.beatsOk - before;
    expect(during >= 3, 'only ' + during + ' heartbeats in ' + HEARTBEAT_WAIT_MS + ' ms');
    expect(rec.beatsFailed === 0, rec.beatsFailed + ' heartbeats failed');
    expect(rec.beatsAwaited > 0 || !streaming, 'hello has topologyVersion but no heartbeat streamed');
    expect(db.adminCommand({ ping: 1 }).ok === 1, 'ping after the wait failed');
    const mode = rec.beatsAwaited ? 'streaming' : 'polling';
    return during + ' heartbeats in ' + HEARTBEAT_WAIT_MS / 1000 + 's (' + mode + ', ' + rec.beatsAwaited + ' awaited)';
  },
};

function refusedInsert(call, docs) {
  const err = thrown(call);
  expect(err !== undefined, 'the insert was not refused');
  const [code, name, msg] = serverError(err);
  expect(!(err.errorLabelSet && err.errorLabelSet.has('RetryableWriteError')), 'labelled RetryableWriteError');
  expect(code === 29003 && name === 'ScalySchemaViolation', 'got ' + code + ' ' + name + ': ' + msg);
  for (const d of docs) {
    expect(coll.findOne({ author: AUTHOR, title: d.title }) === null, d.title + ' was written');
  }
  return err.name + ' code ' + code + ' ' + name + ': ' + msg;
}

function main() {
  if (!AUTHOR) throw new Error('set SCALY_DRIVER_AUTHOR');
  emit({ driver: 'mongosh', version: version(), runtime: 'Node.js ' + process.versions.node });
  for (const name of Object.keys(checks)) {
    const err = thrown(() => {
      const result = checks[name]();
      emit(Object.assign({ check: name, ok: true }, typeof result === 'string' ? { detail: result } : result));
    });
    if (err) {
      emit({ check: name, ok: false, detail: err.name + ': ' + err.message });
      if (name === 'connect') break;
    }
  }
  emit({ done: true });
}

main();
