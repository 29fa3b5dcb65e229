import { describe, expect, it } from 'vitest';
import { parseRequest } from './trigger.js';

describe('parseRequest', () => {
  it('takes the drain timeout and cutWork of an upgrade, and of a reload that hands off', () => {
    expect(parseRequest('{"cmd":"upgrade","drainTimeout":45000,"cutWork":true}')).toEqual({ cmd: 'upgrade', drainTimeout: 45_000, cutWork: true });
    expect(parseRequest('{"cmd":"upgrade","drainTimeout":1,"cutWork":false}')).toEqual({ cmd: 'upgrade', drainTimeout: 1 });
    expect(parseRequest('{"cmd":"upgrade","drainTimeout":86400000}')).toEqual({ cmd: 'upgrade', drainTimeout: 86_400_000 });
    expect(parseRequest('{"cmd":"upgrade","command":"/bin/d","probation":0,"wait":true,"cutWork":true}')).toEqual({ cmd: 'upgrade', command: '/bin/d', probation: 0, wait: true, cutWork: true });
    expect(parseRequest('{"cmd":"reload","drainTimeout":1500,"cutWork":true,"wait":true}')).toEqual({ cmd: 'reload', wait: true, drainTimeout: 1_500, cutWork: true });
    expect(parseRequest('{"cmd":"upgrade"}')).toEqual({ cmd: 'upgrade' });
  });

  it('refuses a bad drain timeout or cutWork with one clear line', () => {
    const timeout = '"drainTimeout" must be a number of milliseconds from 1 to 86400000';
    for (const bad of ['0', '-5', '1.5', '86400001', '"45s"', 'null', 'true', '[1000]']) expect(parseRequest(`{"cmd":"upgrade","drainTimeout":${bad}}`), bad).toBe(timeout);
    expect(parseRequest('{"cmd":"reload","drainTimeout":0}')).toBe(timeout);
    for (const bad of ['1', '"true"', 'null']) expect(parseRequest(`{"cmd":"upgrade","cutWork":${bad}}`), bad).toBe('"cutWork" must be true or false');
  });

  it('refuses the drain fields on a reload in place, which does not hand off', () => {
    expect(parseRequest('{"cmd":"reload","plugin":"validate","cutWork":true}')).toBe('"cutWork" is for a reload that hands off, not with "plugin", "source" or "daemonConfig"');
    expect(parseRequest('{"cmd":"reload","daemonConfig":true,"drainTimeout":1000}')).toBe('"drainTimeout" is for a reload that hands off, not with "plugin", "source" or "daemonConfig"');
    expect(parseRequest('{"cmd":"reload","plugin":"validate","wait":true}')).toBe('"wait" is for a reload that hands off, not with "plugin", "source" or "daemonConfig"');
  });

  it('still takes the other requests as before', () => {
    expect(parseRequest('status')).toEqual({ cmd: 'status' });
    expect(parseRequest('upgrade /bin/d a b')).toEqual({ cmd: 'upgrade', command: '/bin/d', args: ['a', 'b'] });
    expect(parseRequest('{"cmd":"reload","plugin":"validate","source":"/abs/v2.js"}')).toEqual({ cmd: 'reload', plugin: 'validate', source: '/abs/v2.js' });
    expect(parseRequest('{"cmd":"reload","daemonConfig":true}')).toEqual({ cmd: 'reload', daemonConfig: true });
    expect(parseRequest('{"cmd":"upgrade","probation":-1}')).toBe('"probation" must be a number of milliseconds from 0 to 86400000');
  });
});
