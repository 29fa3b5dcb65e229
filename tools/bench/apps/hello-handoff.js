// The same app made handoff-ready with @handoff/core: no data to carry over, so the state is
// nothing and sealing is immediate. Run by handoff-supervisor (listeners come from it).
//   BENCH_DATA_DIR  the data directory (holds only the lock)
import { runDaemon } from '@handoff/core';

if (!process.env.BENCH_DATA_DIR) {
  console.error('hello-handoff: set BENCH_DATA_DIR to the data directory');
  process.exit(2);
}

const exit = await runDaemon({
  buildId: 'hello',
  dataDir: process.env.BENCH_DATA_DIR,
  listeners: { http: { port: Number(process.env.PORT ?? 8080), host: '127.0.0.1' } },
  open: () => Promise.resolve(null),
  revisions: () => [0],
  seal: () => Promise.resolve(),
  handler: () => (req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('hello\n');
  },
});
process.exit(exit.code);
