#!/usr/bin/env node
// Bull 4 interop peer for the Rust test suite.
//
// Usage: node bull-peer.js <command> '<json args>'
//
// Prints exactly one JSON value on stdout when the command is done; everything
// else (logs, Bull warnings, the READY marker) goes to stderr. Exit code 0 on
// success; on failure the error is written to stderr and the exit code is 1.
// Commands that wrap a Bull operation which may legitimately refuse
// (obliterate, retry, promote, retryJobs, remove, progress, log) print
// {"error": "<message>"} with exit code 0 instead, so a test can assert the refusal.
//
// Every command takes `redis` (URL), `prefix` and `queue`; optional `settings`
// (Bull advanced settings) and `limiter` are passed to the Queue constructor.
'use strict';

const Queue = require('bull');

// Keep stdout clean: anything that uses console.log/info goes to stderr.
console.log = console.error;
console.info = console.error;

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

function log(...parts) {
  process.stderr.write(`[bull-peer] ${parts.join(' ')}\n`);
}

function openQueue(args) {
  for (const key of ['redis', 'prefix', 'queue']) {
    if (typeof args[key] !== 'string' || args[key] === '') {
      throw new Error(`missing string argument "${key}"`);
    }
  }
  const opts = { prefix: args.prefix };
  if (args.settings) opts.settings = args.settings;
  if (args.limiter) opts.limiter = args.limiter;
  const queue = new Queue(args.queue, args.redis, opts);
  queue.on('error', err => log('queue error:', err && err.stack ? err.stack : err));
  return queue;
}

async function closeQueue(queue, waitMs = 10000) {
  if (!queue) return;
  const closed = queue.close().then(
    () => true,
    err => {
      log('close failed:', err && err.message);
      return false;
    }
  );
  const ok = await Promise.race([closed, sleep(waitMs).then(() => false)]);
  if (!ok) log(`queue did not close cleanly within ${waitMs} ms`);
}

// Runs a Bull operation that may refuse; a refusal becomes {error: message}.
async function refusable(fn) {
  try {
    await fn();
    return true;
  } catch (err) {
    return { error: err && err.message ? err.message : String(err) };
  }
}

async function mustGetJob(queue, id) {
  const job = await queue.getJob(id);
  if (!job) throw new Error(`job ${id} not found`);
  return job;
}

function jobJSON(job) {
  return job ? job.toJSON() : null;
}

const DEFAULT_EVENTS = [
  'completed',
  'failed',
  'progress',
  'waiting',
  'active',
  'paused',
  'resumed',
  'stalled',
  'duplicated',
  'debounced'
];

const commands = {
  async add(queue, args) {
    if (!Array.isArray(args.jobs)) throw new Error('"jobs" must be an array');
    const ids = [];
    for (const spec of args.jobs) {
      const data = spec.data === undefined ? {} : spec.data;
      const job =
        spec.name === undefined || spec.name === null
          ? await queue.add(data, spec.opts || {})
          : await queue.add(spec.name, data, spec.opts || {});
      ids.push(job.id);
    }
    return ids;
  },

  async process(queue, args) {
    const concurrency = args.concurrency || 1;
    const expect = typeof args.expect === 'number' ? args.expect : Infinity;
    const timeoutMs = typeof args.timeoutMs === 'number' ? args.timeoutMs : 30000;
    const starts = [];
    const completed = [];
    const failed = [];

    let finish;
    const done = new Promise(resolve => (finish = resolve));
    const check = () => {
      if (completed.length + failed.length >= expect) finish(false);
    };

    queue.on('completed', job => {
      completed.push(job.id);
      check();
    });
    queue.on('failed', job => {
      // The local `failed` event fires for every failed attempt; only count the final one.
      const final =
        job.attemptsMade >= job.opts.attempts || Boolean(job.finishedOn) || Boolean(job._discarded);
      if (final) {
        failed.push(job.id);
        check();
      }
    });

    const handler = async job => {
      starts.push({ id: job.id, name: job.name, attemptsMade: job.attemptsMade, startedAt: Date.now() });
      const data = job.data || {};
      if (typeof data.failTimes === 'number' && job.attemptsMade < data.failTimes) {
        throw new Error('fail ' + job.attemptsMade);
      }
      if (data.failAlways) throw new Error('always');
      if (typeof data.log === 'string') await job.log(data.log);
      if (typeof data.sleepMs === 'number') await sleep(data.sleepMs);
      if (data.progress) await job.progress(50);
      if (Object.prototype.hasOwnProperty.call(data, 'ret')) return data.ret;
      return { ok: true, id: job.id };
    };

    queue.process('*', concurrency, handler).catch(err => log('worker stopped:', err && err.message));
    await queue._initProcess();
    await sleep(50);
    log('READY');

    const stop = () => finish(false);
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    const timer = setTimeout(() => finish(true), timeoutMs);
    check();
    const timedOut = await done;
    clearTimeout(timer);
    // Stop taking jobs; let the jobs in hand finish (their events are still recorded).
    await closeQueue(queue);
    return { starts, completed, failed, timedOut };
  },

  async get(queue, args) {
    const job = await queue.getJob(args.id);
    if (!job) return null;
    return Object.assign(job.toJSON(), { state: await job.getState() });
  },

  async getJobs(queue, args) {
    const jobs = await queue.getJobs(args.types, args.start ?? 0, args.end ?? -1, args.asc ?? false);
    return jobs.map(jobJSON);
  },

  counts(queue) {
    return queue.getJobCounts();
  },

  isPaused(queue) {
    return queue.isPaused();
  },

  async pause(queue) {
    await queue.pause();
    return true;
  },

  async resume(queue) {
    await queue.resume();
    return true;
  },

  async clean(queue, args) {
    return queue.clean(args.grace, args.type, args.limit);
  },

  obliterate(queue, args) {
    return refusable(() => queue.obliterate({ force: !!args.force }));
  },

  retry(queue, args) {
    return refusable(async () => (await mustGetJob(queue, args.id)).retry());
  },

  promote(queue, args) {
    return refusable(async () => (await mustGetJob(queue, args.id)).promote());
  },

  // args.name and args.repeat as given to queue.add; prints true.
  async removeRepeatable(queue, args) {
    await queue.removeRepeatable(args.name, args.repeat);
    return true;
  },

  getRepeatableJobs(queue) {
    return queue.getRepeatableJobs();
  },

  retryJobs(queue, args) {
    return refusable(() => queue.retryJobs({ count: args.count }));
  },

  remove(queue, args) {
    return refusable(async () => (await mustGetJob(queue, args.id)).remove());
  },

  logs(queue, args) {
    return queue.getJobLogs(args.id, args.start, args.end, args.asc ?? true);
  },

  log(queue, args) {
    return refusable(async () => (await mustGetJob(queue, args.id)).log(args.row));
  },

  progress(queue, args) {
    return refusable(async () => (await mustGetJob(queue, args.id)).progress(args.value));
  },

  async events(queue, args) {
    const durationMs = typeof args.durationMs === 'number' ? args.durationMs : 3000;
    const names = (Array.isArray(args.events) ? args.events : DEFAULT_EVENTS).map(name =>
      name.startsWith('global:') ? name : 'global:' + name
    );
    const collected = [];
    await queue.isReady();
    // One at a time: registering many at once piles listeners onto the ioredis client.
    for (const name of names) {
      const registered = new Promise(resolve => queue.once('registered:' + name, resolve));
      queue.on(name, (...eventArgs) => collected.push({ event: name, args: eventArgs }));
      await registered;
    }
    await sleep(100);
    log('READY');
    // SIGTERM ends the collection early and still prints what was collected.
    await new Promise(resolve => {
      const timer = setTimeout(resolve, durationMs);
      process.once('SIGTERM', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    return collected;
  },

  // What job.finished() settles with: {value} (the return value; null for undefined) or
  // {error: message} when the job failed or nothing settled within timeoutMs (default 30000).
  // Prints READY once subscribed to the completed and failed events, so a test can start the
  // worker afterwards and exercise the event path rather than the already-finished one.
  async finished(queue, args) {
    const job = await mustGetJob(queue, args.id);
    const timeoutMs = typeof args.timeoutMs === 'number' ? args.timeoutMs : 30000;
    // The subscriptions job.finished() makes first; already made, it reuses them.
    await Promise.all([queue._registerEvent('global:completed'), queue._registerEvent('global:failed')]);
    log('READY');
    let timer;
    const timeout = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`job.finished() did not settle within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const value = await Promise.race([job.finished(), timeout]);
      return { value: value === undefined ? null : value };
    } catch (err) {
      return { error: err && err.message ? err.message : String(err) };
    } finally {
      clearTimeout(timer);
    }
  }
};

async function main() {
  const [command, rawArgs] = process.argv.slice(2);
  if (!command || !Object.prototype.hasOwnProperty.call(commands, command)) {
    throw new Error(
      `usage: node bull-peer.js <command> '<json>'; unknown command ${JSON.stringify(command)}; ` +
        `known: ${Object.keys(commands).join(', ')}`
    );
  }
  const args = rawArgs ? JSON.parse(rawArgs) : {};
  let queue;
  try {
    queue = openQueue(args);
    await queue.isReady();
    const result = await commands[command](queue, args);
    return result === undefined ? null : result;
  } finally {
    await closeQueue(queue);
  }
}

function exit(code, text) {
  if (text === undefined) {
    process.exit(code);
  }
  process.stdout.write(text + '\n', () => process.exit(code));
}

main().then(
  result => exit(0, JSON.stringify(result)),
  err => {
    process.stderr.write(`bull-peer error: ${err && err.stack ? err.stack : err}\n`);
    exit(1);
  }
);
