// Drive the official npm `nacos` 2.6 config client against a server; print what it saw as JSON.
// Usage: node node_client.js HOST:PORT NAMESPACE PASSWORD KEEP
// One client per process: every client in a process (and on a machine) routes through one cluster-client leader,
// which silently shares the first client's namespace and credentials. Give each run its own
// NODE_CLUSTER_CLIENT_PORT.
'use strict';
const { NacosConfigClient } = require('nacos');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const [serverAddr, namespace, password, keep] = process.argv.slice(2);
  const client = new NacosConfigClient({ serverAddr, namespace, username: 'nacos', password, requestTimeout: 6000 });
  await client.ready();
  const out = {};
  const value = (v) => (namespace ? `${namespace}-${v}` : v);
  try {
    out.publish = await client.publishSingle('node.yaml', 'DEFAULT_GROUP', value('v1'));
  } catch (err) {
    out.error = String(err && err.name);
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(0);
  }
  out.get = await client.getConfig('node.yaml', 'DEFAULT_GROUP');
  const seen = [];
  const changed = new Promise((resolve) => {
    client.subscribe({ dataId: 'node.yaml', group: 'DEFAULT_GROUP' }, (content) => {
      seen.push(content);
      if (content === value('v2')) resolve(true);
    });
  });
  await sleep(2000); // let the subscription settle into a held long poll
  const started = Date.now();
  await client.publishSingle('node.yaml', 'DEFAULT_GROUP', value('v2'));
  out.subscribeSawChange = await Promise.race([changed, sleep(20000).then(() => false)]);
  out.subscribeSeconds = (Date.now() - started) / 1000;
  out.subscribeContents = seen;
  client.unSubscribe({ dataId: 'node.yaml', group: 'DEFAULT_GROUP' });
  if (keep !== '1') {
    out.remove = await client.remove('node.yaml', 'DEFAULT_GROUP');
    out.getAfterRemove = await client.getConfig('node.yaml', 'DEFAULT_GROUP');
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ error: String(err && err.stack) }) + '\n');
  process.exit(1);
});
