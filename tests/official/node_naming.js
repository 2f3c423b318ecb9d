// Drive the official npm `nacos` 2.6 naming client against a server; print what it saw as JSON.
// Usage: node node_naming.js HOST:PORT   (give each run its own NODE_CLUSTER_CLIENT_PORT)
'use strict';
const { NacosNamingClient } = require('nacos');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const quiet = { info() {}, warn() {}, error() {}, debug() {} };

async function main() {
  const [serverAddr] = process.argv.slice(2);
  const client = new NacosNamingClient({ logger: quiet, serverList: serverAddr, namespace: 'public',
    username: 'nacos', password: 'nacos' });
  await client.ready();
  const out = {};
  await client.registerInstance('node-svc', { ip: '10.3.0.1', port: 8080, metadata: { lang: 'node' } });
  out.registered = true;
  // the beat reactor starts with a 10 s sleep, then beats at the server's clientBeatInterval (0.2 s here)
  await sleep(11000);
  const all = await client.getAllInstances('node-svc', 'DEFAULT_GROUP', '', false);
  out.instances = all.map((i) => [i.ip, i.port, i.healthy, i.metadata]);
  await client.deregisterInstance('node-svc', { ip: '10.3.0.1', port: 8080 });
  const after = await client.getAllInstances('node-svc', 'DEFAULT_GROUP', '', false);
  out.afterDeregister = after.length;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ error: String(err && err.stack) }) + '\n');
  process.exit(1);
});
