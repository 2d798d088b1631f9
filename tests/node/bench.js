#!/usr/bin/env node
// The Node Bull 4 peer of queue-bench: same phases, same job data, same output keys.
//
// Usage: node bench.js '{"redis": URL, "jobs": N, "concurrency": C, "latencySamples": S}'
'use strict';

const Queue = require('bull');
const Redis = require('ioredis');

const args = JSON.parse(process.argv[2] || '{}');
const url = args.redis || 'redis://127.0.0.1:6379';
const jobs = args.jobs || 20000;
const concurrency = args.concurrency || 1;
const samplesWanted = args.latencySamples || 500;
const prefix = `bench-node-${process.pid}`;
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

async function cost(admin) {
  const stats = await admin.info('commandstats');
  let calls = 0;
  for (const m of stats.matchAll(/calls=(\d+)/g)) calls += Number(m[1]);
  const cpu = await admin.info('cpu');
  const secs = key => Number((cpu.match(new RegExp(`${key}:([0-9.]+)`)) || [0, 0])[1]);
  return { calls, cpu: secs('used_cpu_sys') + secs('used_cpu_user') };
}

function percentile(sorted, p) {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.round((p / 100) * (sorted.length - 1)))];
}

async function main() {
  const admin = new Redis(url);
  const queue = new Queue('bench', url, { prefix });
  await queue.isReady();

  let started = process.hrtime.bigint();
  let next = 0;
  const adder = async () => {
    while (next < jobs) {
      const i = next++;
      await queue.add({ i, path: `/data/file${i}.mp4` });
    }
  };
  await Promise.all(Array.from({ length: 100 }, adder));
  const addSecs = Number(process.hrtime.bigint() - started) / 1e9;

  await admin.config('RESETSTAT');
  const before = await cost(admin);
  let done = 0;
  let finish;
  const finished = new Promise(resolve => (finish = resolve));
  queue.on('completed', () => {
    if (++done === jobs) finish();
  });
  started = process.hrtime.bigint();
  queue.process(concurrency, async () => null);
  await finished;
  const processSecs = Number(process.hrtime.bigint() - started) / 1e9;
  const after = await cost(admin);
  const clients = ['client', 'eclient', 'bclient'].filter(k => queue[`_${k}`] || queue[k]).length;
  await queue.close();

  const lq = new Queue('bench-latency', url, { prefix });
  const samples = [];
  let resolveSample;
  lq.process(1, async job => {
    const now = Number(process.hrtime.bigint()) / 1e6;
    resolveSample(now - job.data.t);
    return null;
  });
  await lq.isReady();
  await sleep(300);
  for (let i = 0; i < samplesWanted; i++) {
    const got = new Promise(resolve => (resolveSample = resolve));
    await lq.add({ i, t: Number(process.hrtime.bigint()) / 1e6 });
    samples.push(await got);
    await sleep(5);
  }
  samples.sort((a, b) => a - b);
  await lq.close();
  const keys = await admin.keys(`${prefix}:*`);
  for (let i = 0; i < keys.length; i += 1000) await admin.del(...keys.slice(i, i + 1000));
  admin.disconnect();

  const r = (x, d) => Math.round(x * d) / d;
  console.log(
    JSON.stringify({
      impl: 'bull',
      jobs,
      concurrency,
      add_jobs_per_s: Math.round(jobs / addSecs),
      process_jobs_per_s: Math.round(jobs / processSecs),
      redis_clients: clients,
      redis_cmds_per_job_process: r((after.calls - before.calls) / jobs, 100),
      redis_cpu_us_per_job_process: r(((after.cpu - before.cpu) * 1e6) / jobs, 10),
      p50_pickup_ms: r(percentile(samples, 50), 1000),
      p99_pickup_ms: r(percentile(samples, 99), 1000),
      rss_mb: r(process.memoryUsage().rss / 1048576, 10)
    })
  );
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
