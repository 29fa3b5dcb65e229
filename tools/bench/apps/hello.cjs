// The small HTTP app every system serves: "hello" on any path. Plain Node, no handoff.
//   PORT         where to listen (127.0.0.1)
//   BENCH_DRAIN  "1": on SIGINT/SIGTERM stop accepting, let requests in flight finish, close
//                idle keep-alive connections, then exit (the graceful-shutdown idiom PM2's
//                docs recommend); otherwise the signal's default action ends the process.
'use strict';
const http = require('node:http');

const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end('hello\n');
});
server.listen(Number(process.env.PORT), '127.0.0.1', () => {
  if (process.send) process.send('ready');
});
if (process.env.BENCH_DRAIN === '1') {
  const drain = () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
  };
  process.once('SIGINT', drain);
  process.once('SIGTERM', drain);
}
