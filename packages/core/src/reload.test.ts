import { describe, expect, it } from 'vitest';
import { toWire } from '@handoff/protocol';
import type { Reload } from '@handoff/protocol';
import { reloaderFor } from './reload.js';
import type { DaemonPlugins, PluginReloadReport } from './reload.js';

const plugin = (name: string): Reload => ({ type: 'Reload', requestId: 1, target: 'plugin', name, source: '' });
const config: Reload = { type: 'Reload', requestId: 2, target: 'config', name: '', source: '' };

/** Plugins whose reload answers `report` (what a host written in plain JavaScript might send). */
function host(report: Partial<PluginReloadReport> | Record<string, unknown>): DaemonPlugins {
  return {
    names: () => ['validate'],
    reload: () => Promise.resolve({ outcome: 'reloaded', version: 'v', error: null, durationMs: 1, cutCalls: 0, ...report }),
  };
}

/** The answer as the daemon would send it: it must encode. */
function encodes(answer: object): Record<string, unknown> {
  return toWire({ type: 'ReloadDone', requestId: 1, ...answer } as never, 'toSupervisor');
}

describe('reloaderFor', () => {
  it('fails an unknown plugin naming the ones there are, and a daemon without plugins or a config hook says so', async () => {
    const reload = reloaderFor(host({}), undefined);
    expect(await reload(plugin('transform'), () => undefined)).toMatchObject({ outcome: 'failed', error: 'this daemon has no plugin named "transform"; it has "validate"' });
    expect((await reload(config, () => undefined)).error).toMatch(/^this daemon has no configuration reload hook/);
    expect((await reloaderFor(undefined, () => Promise.resolve('x'))(plugin('validate'), () => undefined)).error).toMatch(/^this daemon has no plugins/);
  });

  it('always answers within the wire limits, on one line: a multi-line error, a lone surrogate, an over-long version, an unknown outcome', async () => {
    const emoji = '😀'.repeat(2_000); // 8,000 UTF-8 bytes: cut mid-pair, it would leave a lone surrogate
    const answer = await reloaderFor(host({ outcome: 'failed', error: `line one\nline two\r\n${emoji}\uD800`, version: 'v'.repeat(300) }), undefined)(plugin('validate'), () => undefined);
    const wire = encodes(answer);
    expect(wire.error).not.toMatch(/[\r\n]/);
    expect(wire.error).toMatch(/^line one line two 😀/);
    expect(String(wire.version).length).toBeLessThanOrEqual(256);
    const odd = await reloaderFor(host({ outcome: 'swapped?', cutCalls: -3, durationMs: Number.NaN }), undefined)(plugin('validate'), () => undefined);
    expect(encodes(odd)).toMatchObject({ outcome: 'failed', cutCalls: 0, durationMs: 0, error: expect.stringMatching(/unknown outcome "swapped\?"/) as unknown });
  });

  it('keeps the configuration when its hook throws anything, and runs one configuration reload at a time', async () => {
    const weird = await reloaderFor(undefined, () => Promise.reject(Object.create(null) as Error))(config, () => undefined);
    expect(weird).toMatchObject({ outcome: 'failed', error: expect.stringMatching(/^the configuration was not reloaded \(the current one stays\): /) as unknown });
    encodes(weird);
    let release: (version: string) => void = () => undefined;
    const reload = reloaderFor(undefined, ({ progress }) => {
      progress('reading');
      return new Promise((resolve) => (release = resolve));
    });
    const steps: string[] = [];
    const first = reload(config, (step) => steps.push(`${step.phase}: ${step.detail}`));
    expect(await reload(config, () => undefined)).toMatchObject({ outcome: 'failed', error: 'a reload of the configuration is in progress; reload again once it ends' });
    release('digest 1');
    expect(await first).toMatchObject({ outcome: 'reloaded', version: 'digest 1', error: '' });
    expect(steps).toEqual(['config: reading']);
  });
});
