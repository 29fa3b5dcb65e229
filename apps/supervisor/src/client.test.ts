import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { MID_ANSWER, ask, parseAnswer } from './client.js';
import type { Answer } from './client.js';

/** A fake trigger socket: answers every request with `answer`, then ends the connection (or destroys it: a dying supervisor). */
async function fakeSupervisor(answer: string, how: 'end' | 'destroy' = 'end'): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-client-'));
  const path = join(dir, 'trigger.sock');
  const server = createServer((socket: Socket) => {
    socket.once('data', () => {
      socket.write(answer, () => {
        if (how === 'end') socket.end();
        else socket.destroy();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  onTestFinished(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return path;
}

describe('ask', () => {
  it('yields whole answer lines, each with its fields', async () => {
    const socket = await fakeSupervisor('{"type":"phase","phase":"sealing"}\n{"type":"error","code":"HANDOFF_IN_PROGRESS","message":"wait"}\n');
    const seen: Answer[] = [];
    await expect(ask(socket, { cmd: 'upgrade' }, (a) => seen.push(a))).resolves.toEqual([
      { type: 'phase', phase: 'sealing' },
      { type: 'error', code: 'HANDOFF_IN_PROGRESS', message: 'wait' },
    ]);
    expect(seen).toHaveLength(2);
  });

  it('rejects, saying the supervisor closed the connection mid-answer, on a line cut off, garbled or lacking its fields', async () => {
    expect(MID_ANSWER).toBe('the supervisor closed the connection mid-answer; did it die? check its log, then "handoffctl status"');
    for (const answer of [
      '{"type":"phase","phase":"sealing"}\n{"type":"result","committed":tr', // cut off: no newline
      '{"type":"phase","phase":"sealing"}\n{"type":"error"}\n', // an error without code and message
      '{"type":"phase","phase":"seal\u0000ing"}}\n', // garbled
      'null\n',
      '{"code":"X","message":"no type"}\n',
    ]) {
      const seen: Answer[] = [];
      await expect(ask(await fakeSupervisor(answer), { cmd: 'upgrade' }, (a) => seen.push(a)), answer).rejects.toThrow(MID_ANSWER);
      expect(seen.every((a) => a.type === 'phase' && a.phase === 'sealing'), answer).toBe(true);
    }
  });

  it('rejects the same way when the connection breaks after it was made', async () => {
    await expect(ask(await fakeSupervisor('{"type":"phase","phase":"sealing"}\n{"type":"res', 'destroy'), { cmd: 'upgrade' })).rejects.toThrow(MID_ANSWER);
  });
});

describe('parseAnswer', () => {
  it('takes a line only with the fields of its type', () => {
    expect(parseAnswer('{"type":"status","lifecycle":"serving","pid":1}')).toEqual({ type: 'status', lifecycle: 'serving', pid: 1 });
    expect(parseAnswer('{"type":"status","pid":1}')).toBeNull();
    expect(parseAnswer('{"type":"result","handoffId":"h","committed":true,"timings":{"totalMs":1,"phases":{}}}')).not.toBeNull();
    expect(parseAnswer('{"type":"result","handoffId":"h","committed":true}')).toBeNull();
    expect(parseAnswer('{"type":"stopping"}')).toEqual({ type: 'stopping' });
    expect(parseAnswer('[1]')).toBeNull();
  });
});
