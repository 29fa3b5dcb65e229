/** The one HTTP probe of the testkit: a GET on a fresh loopback connection. */
import { request } from 'node:http';

/** GET `path` on a fresh connection; the parsed JSON body of a 200, else null. */
export function getJson(port: number, path: string, timeoutMs = 3_000): Promise<Record<string, unknown> | null> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        try {
          const parsed = JSON.parse(body) as unknown;
          resolve(res.statusCode === 200 && typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : null);
        } catch {
          resolve(null);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => {
      resolve(null);
    });
    req.end();
  });
}
