// The same app made handoff-ready with @handoff/core with no data directory at all: no
// open, no seal, no revisions. Run by handoff-supervisor under a configuration without
// [daemon] data_dir, which hands it off by overlap: the new process accepts on the shared
// listeners before the old one is stopped — by SIGTERM, as on an operator's stop, so the
// signal must drain (stopSignal) rather than end the process with requests in flight.
import { runDaemon } from '@handoff/core';

const stop = new globalThis.AbortController();
process.once('SIGTERM', () => { stop.abort(); });
process.once('SIGINT', () => { stop.abort(); });

const exit = await runDaemon({
  buildId: 'hello-stateless',
  listeners: { http: { port: Number(process.env.PORT ?? 8080), host: '127.0.0.1' } },
  stopSignal: stop.signal,
  handler: () => (req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('hello\n');
  },
});
if (exit.code !== 0) console.error(`hello-stateless: ${exit.reason}`);
process.exit(exit.code);
