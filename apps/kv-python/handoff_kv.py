#!/usr/bin/env python3
"""handoff-kv in Python: the example key-value daemon of handoff, in the standard library only.

A second reference daemon of PROTOCOL.md (version 1), written without the Node library, with
the same HTTP API and the same data format as apps/kv, so that the two hand off to each other:

  PUT /kv/<key>   body = value; answers {"revision":n} once the record is fsynced
  GET /kv/<key>   the value, or 404
  GET /health     {"pid","buildId","revision","keys"}
  GET /ready      200 "ready"
  /slow?ms=N      headers at once, "slow done" after N ms (for drain tests)

Data: <data dir>/kv.log, one JSON record per line ({"k":key,"v":value}); the revision is the
number of records. Lock: a classic POSIX record lock (fcntl.lockf) on <data dir>/.handoff.lock,
which conflicts with the Node daemon's open-file-description lock.

Environment: HANDOFF_DATA_DIR (else KV_DATA_DIR), KV_PORT (without a supervisor, default
8080), KV_BUILD_ID; fault injection: KV_SEAL_DELAY_MS, KV_SEAL_FAIL=1, KV_STALE=1,
KV_FAIL_START=1, KV_OPEN_DELAY_MS, KV_DIE_AFTER_MS, KV_UNHEALTHY_AFTER_MS.
Run `handoff_kv.py --check-vectors <vectors/v1.json>` to check the msgpack codec against the
protocol's golden vectors.
"""
import collections
import email.utils
import errno
import fcntl
import json
import os
import re
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time

PROG = 'handoff-kv-python'
PROTO_MIN = 1
PROTO_MAX = 1
MAX_FRAME = 1024 * 1024
CAP_SEAL_PROGRESS = 1
CAP_RECOVER_FROM_DISK = 2
CAP_RESERVE_LISTENERS = 4
CAP_COMMIT_TO_SUCCESSOR = 8
CAP_SPAWN_HOLDER = 16
CAP_DRAIN_PROGRESS = 128  # not announced: this daemon tracks no long-lived work to report
DEFAULT_BACKLOG = 511
LOCK_FILE = '.handoff.lock'
PID_FILE = '.handoff.pid'
LOG_FILE = 'kv.log'
FAILURE_FILE_MAX = 4096
SET_BY = ('these variables are set by handoff-supervisor (LISTEN_* also by systemd) for the process '
          'it starts: do not set them by hand')
STARTED = time.monotonic()


# ---- output, and the failure file -------------------------------------------------------

class Output:
    """Everything this process prints goes through here; the last 4 KiB are kept until it serves."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tail = bytearray()
        self.keeping = True
        self.failure_file = None

    def _write(self, stream, text):
        data = text.encode('utf-8', 'replace')
        with self.lock:
            if self.keeping:
                self.tail += data
                del self.tail[:-FAILURE_FILE_MAX]
            try:
                stream.buffer.write(data)
                stream.buffer.flush()
            except (OSError, ValueError):
                pass

    def out(self, line):
        self._write(sys.stdout, line + '\n')

    def err(self, line):
        self._write(sys.stderr, line + '\n')

    def event(self, name, **fields):
        self.out(json.dumps({'event': name, 'pid': os.getpid(), **fields}, separators=(',', ':'), ensure_ascii=False))

    def served(self):
        """Once serving, the failure file is not ours to write (PROTOCOL.md section 2)."""
        with self.lock:
            self.keeping = False
            self.tail = bytearray()
            self.failure_file = None

    def write_failure_file(self):
        with self.lock:
            path, data = self.failure_file, bytes(self.tail)
        if not path or not self.keeping:
            return
        try:
            with open(path, 'wb') as f:
                f.write(data[-FAILURE_FILE_MAX:])
        except OSError:
            pass


OUT = Output()


def die(code, line):
    """Exits before serving with one clear line (and the failure file)."""
    OUT.err(f'{PROG}: {line}')
    OUT.write_failure_file()
    os._exit(code)


def _excepthook(kind, value, tb):
    import traceback
    OUT.err(''.join(traceback.format_exception(kind, value, tb)).rstrip())
    OUT.write_failure_file()
    os._exit(70)


def _thread_excepthook(args):
    _excepthook(args.exc_type, args.exc_value, args.exc_traceback)


# ---- msgpack (the subset of PROTOCOL.md section 4) --------------------------------------

class MsgpackError(ValueError):
    pass


def pack(value, out=None):
    """Encodes nil, bool, int, str, bytes, list/tuple and dict (keys in insertion order), shortest
    first. This is the canonical encoding of PROTOCOL.md section 4: a non-negative integer as
    fixint, uint 8/16/32/64 (a timestamp above 2^32-1 is uint 64, 0xcf), a negative one as int
    8-64, bytes as bin 8/16/32 (bin has no fix form)."""
    if out is None:
        out = bytearray()
    if value is None:
        out.append(0xc0)
    elif value is True:
        out.append(0xc3)
    elif value is False:
        out.append(0xc2)
    elif isinstance(value, int):
        n = value
        if 0 <= n <= 0x7f:
            out.append(n)
        elif -32 <= n < 0:
            out.append(n & 0xff)
        elif 0 < n <= 0xff:
            out += b'\xcc' + struct.pack('>B', n)
        elif 0 < n <= 0xffff:
            out += b'\xcd' + struct.pack('>H', n)
        elif 0 < n <= 0xffffffff:
            out += b'\xce' + struct.pack('>I', n)
        elif 0 < n <= 0xffffffffffffffff:
            out += b'\xcf' + struct.pack('>Q', n)
        elif -0x80 <= n:
            out += b'\xd0' + struct.pack('>b', n)
        elif -0x8000 <= n:
            out += b'\xd1' + struct.pack('>h', n)
        elif -0x80000000 <= n:
            out += b'\xd2' + struct.pack('>i', n)
        elif -0x8000000000000000 <= n:
            out += b'\xd3' + struct.pack('>q', n)
        else:
            raise MsgpackError(f'integer {n} does not fit in 64 bits')
    elif isinstance(value, str):
        raw = value.encode('utf-8')
        n = len(raw)
        if n <= 31:
            out.append(0xa0 | n)
        elif n <= 0xff:
            out += b'\xd9' + struct.pack('>B', n)
        elif n <= 0xffff:
            out += b'\xda' + struct.pack('>H', n)
        else:
            out += b'\xdb' + struct.pack('>I', n)
        out += raw
    elif isinstance(value, (bytes, bytearray)):
        n = len(value)
        if n <= 0xff:
            out += b'\xc4' + struct.pack('>B', n)
        elif n <= 0xffff:
            out += b'\xc5' + struct.pack('>H', n)
        else:
            out += b'\xc6' + struct.pack('>I', n)
        out += value
    elif isinstance(value, (list, tuple)):
        n = len(value)
        if n <= 15:
            out.append(0x90 | n)
        elif n <= 0xffff:
            out += b'\xdc' + struct.pack('>H', n)
        else:
            out += b'\xdd' + struct.pack('>I', n)
        for item in value:
            pack(item, out)
    elif isinstance(value, dict):
        n = len(value)
        if n <= 15:
            out.append(0x80 | n)
        elif n <= 0xffff:
            out += b'\xde' + struct.pack('>H', n)
        else:
            out += b'\xdf' + struct.pack('>I', n)
        for k, v in value.items():
            pack(k, out)
            pack(v, out)
    else:
        raise MsgpackError(f'cannot encode {type(value).__name__}: the protocol has no such type')
    return out


class _Unhashable:
    """A map key that cannot be a Python dict key (an array or a map): never looked up."""


_INT_FORMATS = {0xcc: '>B', 0xcd: '>H', 0xce: '>I', 0xcf: '>Q', 0xd0: '>b', 0xd1: '>h', 0xd2: '>i', 0xd3: '>q'}


def unpack(data):
    """Decodes exactly one value; trailing bytes and ext are errors. bin decodes to bytes, which
    only a bin field accepts (any other field refuses it: HANDOFF_INVALID_FIELD). A float 64
    holding an exact integer decodes to that int; any other float decodes to a float, which no
    field accepts (HANDOFF_INVALID_FIELD). Strings keep their UTF-8 length (Utf8) for the byte limits."""
    value, pos = _unpack(memoryview(data), 0, 0)
    if pos != len(data):
        raise MsgpackError(f'{len(data) - pos} trailing bytes after the value')
    return value


class Utf8(str):
    """A decoded msgpack string that remembers its length in UTF-8 bytes."""
    __slots__ = ('nbytes',)


def _need(data, pos, n):
    if pos + n > len(data):
        raise MsgpackError('the value ends early')


def _unpack(data, pos, depth):
    if depth > 64:
        raise MsgpackError('nested deeper than 64 levels')
    _need(data, pos, 1)
    b = data[pos]
    pos += 1
    if b <= 0x7f:
        return b, pos
    if b >= 0xe0:
        return b - 0x100, pos
    if 0xa0 <= b <= 0xbf:
        return _str(data, pos, b & 0x1f)
    if 0x90 <= b <= 0x9f:
        return _array(data, pos, b & 0x0f, depth)
    if 0x80 <= b <= 0x8f:
        return _map(data, pos, b & 0x0f, depth)
    if b == 0xc0:
        return None, pos
    if b == 0xc2:
        return False, pos
    if b == 0xc3:
        return True, pos
    if b in _INT_FORMATS:
        fmt = _INT_FORMATS[b]
        n = struct.calcsize(fmt)
        _need(data, pos, n)
        return struct.unpack_from(fmt, data, pos)[0], pos + n
    if b == 0xcb:
        _need(data, pos, 8)
        f = struct.unpack_from('>d', data, pos)[0]
        if f == f and f not in (float('inf'), float('-inf')) and f == int(f):
            return int(f), pos + 8
        return f, pos + 8
    if b == 0xca:
        _need(data, pos, 4)
        return struct.unpack_from('>f', data, pos)[0], pos + 4
    if b in (0xd9, 0xda, 0xdb):
        fmt = {0xd9: '>B', 0xda: '>H', 0xdb: '>I'}[b]
        n = struct.calcsize(fmt)
        _need(data, pos, n)
        return _str(data, pos + n, struct.unpack_from(fmt, data, pos)[0])
    if b in (0xdc, 0xdd):
        fmt = '>H' if b == 0xdc else '>I'
        n = struct.calcsize(fmt)
        _need(data, pos, n)
        return _array(data, pos + n, struct.unpack_from(fmt, data, pos)[0], depth)
    if b in (0xde, 0xdf):
        fmt = '>H' if b == 0xde else '>I'
        n = struct.calcsize(fmt)
        _need(data, pos, n)
        return _map(data, pos + n, struct.unpack_from(fmt, data, pos)[0], depth)
    if b in (0xc4, 0xc5, 0xc6):
        fmt = {0xc4: '>B', 0xc5: '>H', 0xc6: '>I'}[b]
        n = struct.calcsize(fmt)
        _need(data, pos, n)
        size = struct.unpack_from(fmt, data, pos)[0]
        pos += n
        _need(data, pos, size)
        return bytes(data[pos:pos + size]), pos + size
    if b in (0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8):
        raise MsgpackError('ext: the protocol has no extension types')
    raise MsgpackError(f'byte 0x{b:02x} is not msgpack')


def _str(data, pos, n):
    _need(data, pos, n)
    try:
        s = Utf8(bytes(data[pos:pos + n]).decode('utf-8'))
    except UnicodeDecodeError as e:
        raise MsgpackError(f'a string is not UTF-8 ({e.reason})') from None
    s.nbytes = n
    return s, pos + n


def _array(data, pos, n, depth):
    if n > len(data) - pos:  # each item takes at least one byte
        raise MsgpackError('the array ends early')
    items = []
    for _ in range(n):
        item, pos = _unpack(data, pos, depth + 1)
        items.append(item)
    return items, pos


def _map(data, pos, n, depth):
    if 2 * n > len(data) - pos:
        raise MsgpackError('the map ends early')
    out = {}
    for _ in range(n):
        k, pos = _unpack(data, pos, depth + 1)
        v, pos = _unpack(data, pos, depth + 1)
        if isinstance(k, (list, dict, float)):
            k = _Unhashable()
        elif isinstance(k, Utf8):
            k = str(k)
        out[k] = v  # a repeated key: the last one wins
    return out, pos


# ---- messages (PROTOCOL.md sections 4 and 6) -----------------------------------------------

class ProtocolError(Exception):
    def __init__(self, code, message, fatal=False):
        super().__init__(message)
        self.code = code
        self.fatal = fatal


HANDOFF_ID = ('str', 1, 64, re.compile(r'[A-Za-z0-9._:-]+'))
TEXT = ('str', 0, 4096, None)
UINT = ('uint', 0, 2 ** 53 - 1)
VERSION = ('uint', 1, 0xffff)
PID = ('uint', 1, 0x7fffffff)
CAPS = ('uint', 0, 0xffffffff)
DEADLINE = ('uint', 0, 86_400_000)
REVISIONS = ('uints', 4096)
FINGERPRINT = ('str', 0, 512, None)
BOOL = ('bool',)
REQUEST_ID = ('uint', 1, 0xffffffff)
# Optional fields (added to v1 after its first release): absent means the default, and a
# canonical encoder leaves a field that holds its default out.
STATE = ('optional', ('nullable', ('bin', 512 * 1024)), None)
TO_S, TO_D = 'toSupervisor', 'toDaemon'

SCHEMAS = {
    'Hello': ((TO_S,), [('role', ('enum', ('incumbent', 'successor'))), ('pid', PID), ('buildId', ('str', 0, 256, None)),
                        ('protoMin', VERSION), ('protoMax', VERSION), ('capabilities', CAPS)]),
    'Drained': ((TO_S,), [('handoffId', HANDOFF_ID), ('openConnsRemaining', UINT), ('acceptClosed', BOOL), ('workCut', ('optional', UINT, 0)),
                          ('connsOffered', ('optional', UINT, 0))]),
    # Moving connections (PROTOCOL.md section 6): decoded, never sent or accepted, since this daemon does not announce MoveConnections.
    'ConnOffer': ((TO_S, TO_D), [('handoffId', HANDOFF_ID), ('connId', ('uint', 1, 0xFFFFFFFF)), ('listener', ('str', 0, 64, None)), ('kind', ('str', 1, 64, None)),
                                 ('leftover', ('bin', 64 * 1024)), ('state', ('nullable', ('bin', 64 * 1024)))]),
    # Sent only with the DrainProgress capability in force, which this daemon never announces.
    'DrainProgress': ((TO_S,), [('handoffId', HANDOFF_ID), ('pending', UINT), ('kinds', ('strs', 32, 64)), ('counts', ('uints', 32)), ('oldest', TEXT),
                                ('oldestMs', UINT), ('leftMs', UINT)]),
    'SealProgress': ((TO_S,), [('handoffId', HANDOFF_ID), ('completed', UINT), ('total', UINT)]),
    'SealComplete': ((TO_S,), [('handoffId', HANDOFF_ID), ('revisions', REVISIONS), ('fingerprint', FINGERPRINT), ('state', STATE)]),
    'SealFailed': ((TO_S,), [('handoffId', HANDOFF_ID), ('error', TEXT)]),
    'Ready': ((TO_S,), [('handoffId', HANDOFF_ID), ('listeningOn', ('strs', 64, 512)), ('healthy', BOOL), ('revisions', REVISIONS)]),
    'Heartbeat': ((TO_S, TO_D), [('ts', UINT)]),
    'HelloAck': ((TO_D,), [('version', VERSION), ('handoffId', ('nullable', HANDOFF_ID)), ('capabilities', CAPS)]),
    'PrepareHandoff': ((TO_D,), [('handoffId', HANDOFF_ID), ('successorPid', PID), ('deadlineMs', DEADLINE), ('drainGraceMs', DEADLINE),
                                  ('cutWork', ('optional', BOOL, False)), ('moveConns', ('optional', BOOL, False))]),
    'SealRequest': ((TO_D,), [('handoffId', HANDOFF_ID)]),
    'Begin': ((TO_D,), [('handoffId', HANDOFF_ID), ('seal', ('nullable', ('seal',))), ('state', STATE), ('conns', ('optional', UINT, 0))]),
    'Commit': ((TO_D,), [('handoffId', HANDOFF_ID)]),
    'Abort': ((TO_D,), [('handoffId', ('nullable', HANDOFF_ID)), ('code', ('str', 1, 64, re.compile(r'[A-Z0-9_]+'))), ('reason', TEXT)]),
    'ResumeAfterAbort': ((TO_D,), [('handoffId', HANDOFF_ID), ('reason', TEXT)]),
    'SpawnHolder': ((TO_D,), [('argv', ('strs', 256, 8192)), ('cwd', ('str', 1, 8192, None)), ('env', ('strs', 1024, 8192))]),
    'HolderSpawned': ((TO_S,), [('pid', ('nullable', PID)), ('error', TEXT)]),
    # Reload in place (PROTOCOL.md section 6): decoded to be refused, since this daemon has nothing to reload and does not announce it.
    'Reload': ((TO_D,), [('requestId', REQUEST_ID), ('target', ('enum', ('plugin', 'config'))), ('name', ('str', 0, 64, re.compile(r'[A-Za-z0-9_.-]*'))), ('source', ('str', 0, 8192, None))]),
    'ReloadProgress': ((TO_S,), [('requestId', REQUEST_ID), ('phase', ('str', 1, 32, re.compile(r'[A-Za-z]+'))), ('detail', TEXT)]),
    'ReloadDone': ((TO_S,), [('requestId', REQUEST_ID), ('outcome', ('enum', ('reloaded', 'rolledBack', 'failed', 'refused'))), ('version', ('str', 0, 256, None)),
                             ('error', TEXT), ('durationMs', UINT), ('cutCalls', UINT)]),
}
ENV_ENTRY = re.compile(r'[A-Za-z_][A-Za-z0-9_]*=', re.S)


def _invalid(mtype, field, expected, got):
    shown = repr(got)
    if len(shown) > 80:
        shown = shown[:77] + '...'
    return ProtocolError('HANDOFF_INVALID_FIELD', f'{mtype}.{field}: expected {expected}, got {shown}; the peer speaks protocol v1 incorrectly')


def _utf8_len(s):
    return s.nbytes if isinstance(s, Utf8) else len(s.encode('utf-8'))


def _validate(mtype, field, spec, value):
    kind = spec[0]
    if kind == 'uint':
        if not isinstance(value, int) or isinstance(value, bool) or not spec[1] <= value <= spec[2]:
            raise _invalid(mtype, field, f'an integer from {spec[1]} to {spec[2]}', value)
        return int(value)
    if kind == 'str':
        if not isinstance(value, str):
            raise _invalid(mtype, field, 'a string', value)
        n = _utf8_len(value)
        if not spec[1] <= n <= spec[2]:
            raise _invalid(mtype, field, f'a string of {spec[1]} to {spec[2]} UTF-8 bytes', value)
        if spec[3] is not None and not spec[3].fullmatch(value):
            raise _invalid(mtype, field, f'a string matching {spec[3].pattern}', value)
        return str(value)
    if kind == 'bool':
        if not isinstance(value, bool):
            raise _invalid(mtype, field, 'a boolean', value)
        return value
    if kind == 'enum':
        if not isinstance(value, str) or value not in spec[1]:
            raise _invalid(mtype, field, f'one of {", ".join(spec[1])}', value)
        return str(value)
    if kind == 'uints':
        if not isinstance(value, list) or len(value) > spec[1]:
            raise _invalid(mtype, field, f'an array of at most {spec[1]} integers', value)
        return [_validate(mtype, f'{field}[{i}]', UINT, v) for i, v in enumerate(value)]
    if kind == 'strs':
        if not isinstance(value, list) or len(value) > spec[1]:
            raise _invalid(mtype, field, f'an array of at most {spec[1]} strings', value)
        return [_validate(mtype, f'{field}[{i}]', ('str', 0, spec[2], None), v) for i, v in enumerate(value)]
    if kind == 'nullable':
        return None if value is None else _validate(mtype, field, spec[1], value)
    if kind == 'bin':
        if not isinstance(value, (bytes, bytearray)) or len(value) > spec[1]:
            raise _invalid(mtype, field, f'bytes (msgpack bin) of at most {spec[1]}', value)
        return bytes(value)
    if kind == 'optional':
        return _validate(mtype, field, spec[1], value)
    if kind == 'seal':
        if not isinstance(value, dict):
            raise _invalid(mtype, field, 'a map with revisions and fingerprint', value)
        out = {}
        for name, inner in (('revisions', REVISIONS), ('fingerprint', FINGERPRINT)):
            if name not in value:
                raise _invalid(mtype, f'{field}.{name}', 'a value (the field is required)', None)
            out[name] = _validate(mtype, f'{field}.{name}', inner, value[name])
        return out
    raise AssertionError(kind)


def _check(m):
    t = m['type']
    if t == 'Hello' and m['protoMin'] > m['protoMax']:
        return 'protoMin must not exceed protoMax'
    if t == 'SealProgress' and m['completed'] > m['total']:
        return 'completed must not exceed total'
    if t == 'PrepareHandoff' and m['drainGraceMs'] > m['deadlineMs']:
        return 'drainGraceMs must not exceed deadlineMs'
    if t == 'DrainProgress' and len(m['kinds']) != len(m['counts']):
        return 'kinds and counts must have the same length'
    if t == 'Reload':
        if m['target'] == 'plugin' and m['name'] == '':
            return 'a plugin Reload must name the plugin'
        if m['target'] == 'config' and (m['name'] != '' or m['source'] != ''):
            return 'a config Reload has an empty name and source'
    if t == 'SpawnHolder':
        if not m['argv'] or m['argv'][0] == '':
            return 'argv must name a program'
        if not all(ENV_ENTRY.match(e) for e in m['env']):
            return 'env entries must be NAME=value'
    return None


def build_message(payload, direction, for_wire=False):
    """Validates a decoded payload received in `direction`; returns a dict of the schema's fields,
    an absent optional field holding its default. `for_wire` leaves out every optional field
    that holds its default (the canonical form)."""
    if not isinstance(payload, dict):
        raise ProtocolError('HANDOFF_MALFORMED_PAYLOAD', f'payload is a {type(payload).__name__}, expected a msgpack map with a "type" key')
    tag = payload.get('type')
    if not isinstance(tag, str):
        raise ProtocolError('HANDOFF_MALFORMED_PAYLOAD', 'payload\'s "type" is not a string')
    if tag not in SCHEMAS:
        raise ProtocolError('HANDOFF_UNKNOWN_MESSAGE', f'unknown message type {str(tag)[:64]!r}')
    directions, fields = SCHEMAS[tag]
    if direction not in directions:
        raise ProtocolError('HANDOFF_WRONG_DIRECTION', f'{tag} is not sent {"by a daemon to the supervisor" if direction == TO_S else "by the supervisor to a daemon"}')
    out = {'type': str(tag)}
    defaulted = []
    for name, spec in fields:
        if name not in payload and spec[0] == 'optional':
            out[name] = spec[2]
            defaulted.append(name)
            continue
        if name not in payload:
            raise _invalid(tag, name, 'a value (the field is required)', None)
        out[name] = _validate(tag, name, spec, payload[name])
        # Defaults are nil or a bool: identity is equality, and 0 is not False.
        if spec[0] == 'optional' and out[name] is spec[2]:
            defaulted.append(name)
    problem = _check(out)
    if problem:
        raise ProtocolError('HANDOFF_INVALID_FIELD', f'{tag}: {problem}')
    if for_wire:
        for name in defaulted:
            del out[name]
    return out


def encode_frame(message, direction=TO_S, version=1):
    """Validates `message` and returns its frame, with `type` first and the fields in schema order."""
    checked = build_message(message, direction, for_wire=True)
    payload = pack(checked)
    length = 2 + len(payload)
    if length > MAX_FRAME:
        raise ProtocolError('HANDOFF_FRAME_TOO_LARGE', f'{message["type"]} encodes to {length} bytes, above {MAX_FRAME}')
    return struct.pack('>IH', length, version) + bytes(payload)


class FrameReader:
    """Incremental frame decoder: feed() returns ('ok', message) and ('error', ProtocolError) items."""

    def __init__(self, direction=TO_D):
        self.buf = bytearray()
        self.direction = direction
        self.failed = False

    def feed(self, data):
        results = []
        if self.failed:
            return results
        self.buf += data
        while len(self.buf) >= 4:
            length = struct.unpack_from('>I', self.buf, 0)[0]
            if length > MAX_FRAME:
                self.failed = True
                results.append(('error', ProtocolError('HANDOFF_FRAME_TOO_LARGE', f'frame of {length} bytes announced, above the limit of {MAX_FRAME}', True)))
                return results
            if length < 2:
                self.failed = True
                results.append(('error', ProtocolError('HANDOFF_FRAME_INVALID', f'frame length {length} cannot hold the 2-byte version field', True)))
                return results
            if len(self.buf) < 4 + length:
                break
            frame = bytes(self.buf[4:4 + length])
            del self.buf[:4 + length]
            version = struct.unpack_from('>H', frame, 0)[0]
            if not PROTO_MIN <= version <= PROTO_MAX:
                results.append(('error', ProtocolError('HANDOFF_UNSUPPORTED_VERSION', f'frame version {version} is outside {PROTO_MIN}..{PROTO_MAX}')))
                continue
            try:
                payload = unpack(frame[2:])
            except MsgpackError as e:
                results.append(('error', ProtocolError('HANDOFF_MALFORMED_PAYLOAD', f'payload is not valid msgpack: {e}')))
                continue
            try:
                results.append(('ok', build_message(payload, self.direction)))
            except ProtocolError as e:
                results.append(('error', e))
        return results

    def end(self):
        if self.buf and not self.failed:
            return ProtocolError('HANDOFF_FRAME_TRUNCATED', f'stream ended inside a frame ({len(self.buf)} bytes held)', True)
        return None


def explain_revision_gap(sealed, advertised):
    if len(sealed) != len(advertised):
        return f'successor advertises {len(advertised)} shards, the incumbent sealed {len(sealed)}'
    for shard, (s, a) in enumerate(zip(sealed, advertised)):
        if a < s:
            return f'shard {shard}: successor is at revision {a}, the incumbent sealed {s} (acknowledged writes would be lost)'
    return None


# ---- the spawn contract (PROTOCOL.md section 2) ---------------------------------------

class EnvError(Exception):
    pass


CONTRACT_VARS = ('LISTEN_FDS', 'LISTEN_FDNAMES', 'LISTEN_PID', 'HANDOFF_RESERVE_COPIES', 'HANDOFF_ROLE', 'HANDOFF_SOCK_FD',
                 'HANDOFF_DATA_DIR', 'HANDOFF_CONTROL_SOCKET', 'HANDOFF_HEARTBEAT_MS', 'HANDOFF_LIVENESS_MS', 'HANDOFF_HELLO_MS',
                 'HANDOFF_LISTEN_BACKLOGS', 'HANDOFF_FAILURE_FILE')


def _count(env, name, maximum):
    raw = env.get(name, '')
    if raw == '':
        return 0
    if not re.fullmatch(r'[0-9]+', raw) or int(raw) > maximum:
        raise EnvError(f'{name}={json.dumps(raw)} is not a count from 0 to {maximum}; {SET_BY}')
    return int(raw)


def _is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return None


def _check_socket_fd(fd, what):
    ok = _is_socket(fd)
    if ok is None:
        raise EnvError(f'{what} is fd {fd}, which is not open in this process; the spawner must pass it as fd {fd}; {SET_BY}')
    if not ok:
        raise EnvError(f'{what} is fd {fd}, which is not a socket; {SET_BY}')


class Spawn:
    """What this process learned from its environment (the variables are removed from it)."""

    def __init__(self, env):
        for_us = env.get('LISTEN_PID') == str(os.getpid())
        self.failure_file = env.get('HANDOFF_FAILURE_FILE') or None
        count = _count(env, 'LISTEN_FDS', 64) if for_us else 0
        copies = _count(env, 'HANDOFF_RESERVE_COPIES', 16) if for_us else 0
        names = [n for n in env.get('LISTEN_FDNAMES', '').split(':') if n]
        if count > 0 and names and len(names) != count:
            raise EnvError(f'LISTEN_FDNAMES names {len(names)} listeners but LISTEN_FDS={count}; {SET_BY}')
        role = env.get('HANDOFF_ROLE', '')
        if role not in ('', 'successor'):
            raise EnvError(f'HANDOFF_ROLE={json.dumps(role)} is not a role: the only one is "successor" (unset: a cold start); {SET_BY}')
        self.role = 'successor' if role == 'successor' else 'cold'
        self.channel_fd = None
        if self.role == 'successor':
            raw = env.get('HANDOFF_SOCK_FD', '')
            if not re.fullmatch(r'[0-9]+', raw):
                raise EnvError(f'HANDOFF_SOCK_FD={json.dumps(raw)} is not an fd number, which HANDOFF_ROLE=successor needs; {SET_BY}')
            self.channel_fd = int(raw)
            _check_socket_fd(self.channel_fd, 'HANDOFF_SOCK_FD')
        raw_backlogs = env.get('HANDOFF_LISTEN_BACKLOGS', '')
        backlogs = raw_backlogs.split(':') if raw_backlogs else []
        if any(not re.fullmatch(r'[0-9]+', b) or not 1 <= int(b) <= 65535 for b in backlogs):
            raise EnvError(f'HANDOFF_LISTEN_BACKLOGS={json.dumps(raw_backlogs)} is not a list of accept backlogs from 1 to 65535, one per listener, separated by ":"; {SET_BY}')
        self.listeners = []  # (name, fd, backlog, [reserve fds])
        for i in range(count):
            fd = 3 + i
            _check_socket_fd(fd, f'listener {i} (LISTEN_FDS)')
            reserves = [3 + count * (c + 1) + i for c in range(copies)]
            for r in reserves:
                _check_socket_fd(r, f'reserve copy of listener {i}')
            backlog = int(backlogs[i]) if i < len(backlogs) else DEFAULT_BACKLOG
            self.listeners.append((names[i] if i < len(names) else f'fd{fd}', fd, backlog, reserves))
        self.heartbeat_ms = _count(env, 'HANDOFF_HEARTBEAT_MS', 86_400_000) or 500
        self.liveness_ms = _count(env, 'HANDOFF_LIVENESS_MS', 86_400_000) or 3000
        self.control_socket = env.get('HANDOFF_CONTROL_SOCKET') or None
        self.data_dir = env.get('HANDOFF_DATA_DIR') or env.get('KV_DATA_DIR') or None
        for name in CONTRACT_VARS:
            env.pop(name, None)
        # Our children (a listener holder) get only the fds we pass them explicitly.
        for _, fd, _, reserves in self.listeners:
            for f in [fd, *reserves]:
                os.set_inheritable(f, False)
        if self.channel_fd is not None:
            os.set_inheritable(self.channel_fd, False)


# ---- the data-directory lock ----------------------------------------------------------

class LockHeld(Exception):
    pass


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except PermissionError:
        return True
    except OSError:
        return False


class DirLock:
    """A classic POSIX record lock (fcntl.lockf) on <data dir>/.handoff.lock. The kernel drops
    such a lock when this process closes ANY fd of the file: nothing else here opens it."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, LOCK_FILE)
        self.fd = None

    @property
    def held(self):
        return self.fd is not None

    def acquire(self, wait_ms, abort=None):
        """Takes the lock, retrying every 5 ms for up to wait_ms; raises LockHeld naming the holder."""
        assert self.fd is None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise LockHeld(f'cannot open the lock file in {self.data_dir}: {e.strerror}; check that the data directory exists and is writable') from None
        deadline = time.monotonic() + wait_ms / 1000
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise LockHeld(f'cannot lock {self.path}: {e.strerror}') from None
            if time.monotonic() >= deadline or (abort is not None and abort.is_set()):
                os.close(fd)  # we hold no lock on it, so closing drops nothing
                raise LockHeld(f'the data directory {self.data_dir} is locked by {self._holder()}; only one daemon may write it — '
                               'stop that process, or let the supervisor hand off to this one')
            time.sleep(0.005)
        self.fd = fd
        tmp = os.path.join(self.data_dir, f'{PID_FILE}.{os.getpid()}.tmp')
        with open(tmp, 'w') as f:
            f.write(f'{os.getpid()}\n')
        os.replace(tmp, os.path.join(self.data_dir, PID_FILE))

    def _holder(self):
        try:
            with open(os.path.join(self.data_dir, PID_FILE)) as f:
                text = f.read().strip()
        except OSError:
            text = ''
        if not text.isdigit():
            return 'another process (no pid file)'
        pid = int(text)
        return f'pid {pid} ({"alive" if _pid_alive(pid) else "not alive: the pid file is stale"})'

    def release(self):
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# ---- the store: kv.log, group commit ----------------------------------------------------

class StoreClosed(Exception):
    pass


class _Write:
    __slots__ = ('key', 'value', 'line', 'result')

    def __init__(self, key, value, line):
        self.key, self.value, self.line, self.result = key, value, line, None


class Store:
    """A map rebuilt from the append-only kv.log; a write is acknowledged once fsynced, and
    concurrent writes share one fsync. The revision is the number of records."""

    def __init__(self, data_dir, drop_last=False):
        path = os.path.join(data_dir, LOG_FILE)
        self.map = {}
        self.revision = 0
        self.cond = threading.Condition()
        self.pending = []
        self.flushing = False
        self.closed = False
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            with open(path, 'rb') as f:
                data = f.read()
            end = data.rfind(b'\n') + 1  # what follows the last newline is torn (or empty)
            lines = data[:end].split(b'\n')[:-1]
            if drop_last:
                lines = lines[:-1]
            for number, raw in enumerate(lines, 1):
                try:
                    record = json.loads(raw.decode('utf-8'))
                    key, value = record['k'], record['v']
                    if not isinstance(key, str) or not isinstance(value, str):
                        raise ValueError('k and v must be strings')
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f'{path} line {number} is not a record ({e}); the log is damaged') from None
                self.map[key] = value
                self.revision += 1
            if not drop_last and end != len(data):
                os.ftruncate(self.fd, end)
                os.fsync(self.fd)
        except BaseException:
            os.close(self.fd)
            raise

    def get(self, key):
        return self.map.get(key)

    def put(self, key, value):
        line = (json.dumps({'k': key, 'v': value}, separators=(',', ':'), ensure_ascii=False) + '\n').encode('utf-8')
        w = _Write(key, value, line)
        with self.cond:
            if self.closed:
                raise StoreClosed('the store is sealed')
            self.pending.append(w)
            while w.result is None:
                if self.flushing:
                    self.cond.wait()
                    continue
                self.flushing = True
                batch, self.pending = self.pending, []
                self.cond.release()
                error = None
                start = None
                try:
                    start = os.fstat(self.fd).st_size
                    data = b''.join(b.line for b in batch)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(self.fd, view):]
                    os.fsync(self.fd)
                except OSError as e:
                    error = e
                    # Not acknowledged: cut the batch off again, so that the revision (the
                    # record count) never counts a write nobody was told succeeded.
                    if start is not None:
                        try:
                            os.ftruncate(self.fd, start)
                        except OSError:
                            pass
                finally:
                    self.cond.acquire()
                for b in batch:
                    if error is not None:
                        b.result = error
                    else:
                        self.map[b.key] = b.value
                        self.revision += 1
                        b.result = self.revision
                self.flushing = False
                self.cond.notify_all()
        if isinstance(w.result, Exception):
            raise w.result
        return w.result

    def sync(self):
        with self.cond:
            if not self.closed:
                os.fsync(self.fd)

    def close(self):
        """Refuses new writes, lets the pending ones finish, fsyncs and closes the log."""
        with self.cond:
            if self.fd is None:
                return
            self.closed = True
            while self.flushing or self.pending:
                self.cond.wait()
            fd, self.fd = self.fd, None
        os.fsync(fd)
        os.close(fd)


# ---- HTTP ---------------------------------------------------------------------------

REASONS = {100: 'Continue', 200: 'OK', 400: 'Bad Request', 404: 'Not Found', 413: 'Payload Too Large',
           431: 'Request Header Fields Too Large', 501: 'Not Implemented', 503: 'Service Unavailable'}
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
IDLE_TIMEOUT_S = 60
POLL_S = 0.02
HEX = set('0123456789abcdefABCDEF')


def decode_uri_component(s):
    """JavaScript's decodeURIComponent: each run of %XX is strict UTF-8, other characters stay
    as they are, '+' is not a space; raises ValueError (or UnicodeDecodeError) when malformed."""
    out = []
    i = 0
    while i < len(s):
        if s[i] != '%':
            j = s.find('%', i)
            j = len(s) if j < 0 else j
            out.append(s[i:j])
            i = j
            continue
        raw = bytearray()
        while i < len(s) and s[i] == '%':
            digits = s[i + 1:i + 3]
            if len(digits) != 2 or not set(digits) <= HEX:
                raise ValueError('malformed percent-encoding')
            raw.append(int(digits, 16))
            i += 3
        out.append(raw.decode('utf-8'))
    return ''.join(out)


class Conn:
    __slots__ = ('sock', 'idle', 'force', 'thread')

    def __init__(self, sock):
        self.sock = sock
        self.idle = True
        self.force = False
        self.thread = None


class HttpServer:
    """HTTP/1.1 with keep-alive on listening sockets: one acceptor thread, one thread per
    connection. Draining never closes a listening socket: it only stops accepting."""

    def __init__(self, daemon, listeners):
        self.daemon = daemon
        self.listeners = listeners  # [(name, socket)]
        self.conns = set()
        self.lock = threading.Lock()
        self.accepting = False
        self.draining = False
        self.close_idle = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.thread = threading.Thread(target=self._acceptor, name='acceptor', daemon=True)
        self.thread.start()

    def describe(self):
        out = []
        for name, sock in self.listeners:
            addr = sock.getsockname()
            if sock.family == socket.AF_UNIX:
                where = f'unix:{addr.decode("utf-8", "replace") if isinstance(addr, bytes) else addr}'
            elif sock.family == socket.AF_INET6:
                where = f'tcp:[{addr[0]}]:{addr[1]}'
            else:
                where = f'tcp:{addr[0]}:{addr[1]}'
            out.append(f'{name}={where}')
        return out

    def _wake(self):
        try:
            os.write(self.wake_w, b'x')
        except BlockingIOError:
            pass

    def start_accepting(self):
        with self.lock:
            self.accepting = True
            self.draining = False
            self.close_idle = False
        self._wake()

    def stop_accepting(self):
        """Once this returns, no new connection is accepted (the acceptor checks under the lock)."""
        with self.lock:
            self.accepting = False
        self._wake()

    def _acceptor(self):
        sel = selectors.DefaultSelector()
        sel.register(self.wake_r, selectors.EVENT_READ, None)
        registered = False
        while True:
            with self.lock:
                want = self.accepting
            if want and not registered:
                for _, sock in self.listeners:
                    sel.register(sock, selectors.EVENT_READ, sock)
                registered = True
            elif not want and registered:
                for _, sock in self.listeners:
                    sel.unregister(sock)
                registered = False
            for key, _ in sel.select():
                if key.data is None:
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                self._accept(key.data)

    def _accept(self, listener):
        for _ in range(64):
            with self.lock:
                if not self.accepting:
                    return
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    return  # another process took it, or nothing left
                except OSError as e:
                    if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                        continue
                    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        time.sleep(0.05)
                        return
                    raise
                sock.setblocking(True)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = Conn(sock)
                self.conns.add(conn)
            conn.thread = threading.Thread(target=self._serve, args=(conn,), name='http', daemon=True)
            conn.thread.start()

    def open_connections(self):
        with self.lock:
            return len(self.conns)

    def drain(self, deadline, grace_ms, abort):
        """Stops accepting and waits until every connection is gone: every answer says
        Connection: close; connections open at the start may keep the acceptor accepting
        (each new connection served once) until they are gone or the grace ends; idle ones
        are closed after the grace; what remains at the deadline is cut. Returns the number cut."""
        with self.lock:
            self.draining = True
            preexisting = set(self.conns)
        grace_end = time.monotonic() + grace_ms / 1000
        accepting = True
        while True:
            now = time.monotonic()
            with self.lock:
                preexisting &= self.conns
                remaining = len(self.conns)
            if abort is not None and abort.is_set():
                self.stop_accepting()
                return self.open_connections()
            if accepting and (not preexisting or now >= grace_end):
                self.stop_accepting()
                accepting = False
                continue
            if not accepting and remaining == 0:
                return 0
            if now >= deadline:
                self.stop_accepting()
                with self.lock:
                    cut = list(self.conns)
                for conn in cut:
                    conn.force = True
                    try:
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                for conn in cut:
                    if conn.thread is not None:
                        conn.thread.join(1.0)
                return len(cut)
            if now >= grace_end:
                self.close_idle = True
            time.sleep(0.005)

    # -- one connection
    def _serve(self, conn):
        sock = conn.sock
        poller = selectors.DefaultSelector()
        poller.register(sock, selectors.EVENT_READ)
        buf = bytearray()
        idle_since = time.monotonic()
        try:
            while True:
                while buf[:2] == b'\r\n':
                    del buf[:2]
                head_end = buf.find(b'\r\n\r\n')
                while head_end < 0:
                    conn.idle = not buf
                    if conn.force:
                        return
                    if len(buf) > MAX_HEAD:
                        self._respond(sock, 431, b'', False, 'GET')
                        return
                    if not poller.select(POLL_S):
                        if not buf and (self.close_idle or time.monotonic() - idle_since > IDLE_TIMEOUT_S):
                            return
                        continue
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                    while buf[:2] == b'\r\n':
                        del buf[:2]
                    head_end = buf.find(b'\r\n\r\n')
                conn.idle = False
                head = bytes(buf[:head_end]).decode('latin-1')
                del buf[:head_end + 4]
                lines = head.split('\r\n')
                parts = lines[0].split(' ')
                if len(parts) != 3 or not parts[2].startswith('HTTP/1.'):
                    self._respond(sock, 400, b'', False, 'GET')
                    return
                method, target, version = parts
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(':')
                    if not sep:
                        self._respond(sock, 400, b'', False, method)
                        return
                    name = name.strip().lower()
                    value = value.strip()
                    headers[name] = f'{headers[name]}, {value}' if name in headers else value
                tokens = {t.strip().lower() for t in headers.get('connection', '').split(',')}
                keep = ('close' not in tokens) if version == 'HTTP/1.1' else ('keep-alive' in tokens)
                if headers.get('expect', '').lower() == '100-continue':
                    sock.sendall(b'HTTP/1.1 100 Continue\r\n\r\n')
                body, ok = self._read_body(sock, poller, buf, headers, conn)
                if ok is None:
                    return
                if not ok:
                    self._respond(sock, 413 if body == 'large' else 400, b'', False, method)
                    return
                status, payload, extra = self.daemon.handle(method, target, body, conn, sock)
                if self.draining or conn.force:
                    keep = False
                if status is not None:
                    self._respond(sock, status, payload, keep, method, extra)
                if not keep:
                    return
                idle_since = time.monotonic()
        except OSError:
            return
        finally:
            poller.close()
            with self.lock:
                self.conns.discard(conn)
            try:
                sock.close()
            except OSError:
                pass

    def _recv_more(self, sock, poller, buf, conn):
        while True:
            if conn.force:
                return False
            if poller.select(POLL_S):
                data = sock.recv(65536)
                if not data:
                    return False
                buf += data
                return True

    def _read_body(self, sock, poller, buf, headers, conn):
        """Returns (body bytes, True), ('large'|'bad', False), or (None, None) when the peer went away."""
        if 'chunked' in headers.get('transfer-encoding', '').lower():
            body = bytearray()
            while True:
                while buf.find(b'\r\n') < 0:
                    if len(buf) > MAX_HEAD:
                        return 'bad', False
                    if not self._recv_more(sock, poller, buf, conn):
                        return None, None
                i = buf.find(b'\r\n')
                size_text = bytes(buf[:i]).split(b';')[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    return 'bad', False
                del buf[:i + 2]
                if size == 0:
                    while True:  # trailers, up to the empty line
                        j = buf.find(b'\r\n')
                        if j < 0:
                            if not self._recv_more(sock, poller, buf, conn):
                                return None, None
                            continue
                        line = bytes(buf[:j])
                        del buf[:j + 2]
                        if not line:
                            return bytes(body), True
                if len(body) + size > MAX_BODY:
                    return 'large', False
                while len(buf) < size + 2:
                    if not self._recv_more(sock, poller, buf, conn):
                        return None, None
                body += buf[:size]
                del buf[:size + 2]
        raw = headers.get('content-length', '0') or '0'
        if not re.fullmatch(r'[0-9]+', raw):
            return 'bad', False
        length = int(raw)
        if length > MAX_BODY:
            return 'large', False
        while len(buf) < length:
            if not self._recv_more(sock, poller, buf, conn):
                return None, None
        body = bytes(buf[:length])
        del buf[:length]
        return body, True

    def _respond(self, sock, status, body, keep, method, extra=None):
        head = [f'HTTP/1.1 {status} {REASONS.get(status, "Unknown")}',
                f'Date: {email.utils.formatdate(usegmt=True)}',
                f'Connection: {"keep-alive" if keep else "close"}',
                f'Content-Length: {len(body)}']
        for k, v in (extra or {}).items():
            head.append(f'{k}: {v}')
        data = ('\r\n'.join(head) + '\r\n\r\n').encode('latin-1')
        if method != 'HEAD':
            data += body
        sock.sendall(data)


# ---- the event loop of the control plane ----------------------------------------------

class Loop:
    """Selectors, timers, and events posted from other threads; runs in the main thread."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._drain_wake)
        self.queue = collections.deque()
        self.timers = {}

    def post(self, fn, *args):
        self.queue.append((fn, args))
        try:
            os.write(self.wake_w, b'x')
        except BlockingIOError:
            pass

    def _drain_wake(self, _mask):
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def set_timer(self, name, ms, fn):
        self.timers[name] = (time.monotonic() + ms / 1000, fn)

    def cancel_timer(self, name):
        self.timers.pop(name, None)

    def run(self):
        while True:
            while self.queue:
                fn, args = self.queue.popleft()
                fn(*args)
            timeout = None
            if self.timers:
                timeout = max(0.0, min(d for d, _ in self.timers.values()) - time.monotonic())
            for key, mask in self.sel.select(timeout):
                key.data(mask)
            now = time.monotonic()
            for name, (due, fn) in list(self.timers.items()):
                if due <= now and self.timers.get(name, (None,))[0] == due:
                    del self.timers[name]
                    fn()


class Peer:
    """A framed protocol connection driven by the loop."""

    def __init__(self, loop, sock, on_message, on_close):
        self.loop = loop
        self.sock = sock
        self.on_message = on_message
        self.on_close = on_close
        self.reader = FrameReader(TO_D)
        self.out = bytearray()
        self.closed = False
        sock.setblocking(False)
        loop.sel.register(sock, selectors.EVENT_READ, self._on_event)

    def _on_event(self, mask):
        if self.closed:
            return
        if mask & selectors.EVENT_WRITE:
            self._flush()
        if mask & selectors.EVENT_READ and not self.closed:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.close(f'socket error: {e.strerror}')
                return
            if not data:
                truncated = self.reader.end()
                self.close(f'{truncated.code}: {truncated}' if truncated else 'EOF')
                return
            for kind, item in self.reader.feed(data):
                if self.closed:
                    return
                if kind == 'ok':
                    self.on_message(self, item)
                else:
                    OUT.err(f'{PROG}: protocol error from the supervisor: {item.code}: {item}')
                    self.close(f'protocol error: {item.code}: {item}')
                    return

    def send(self, message):
        if self.closed:
            return
        self.out += encode_frame(message)
        self._flush()

    def _flush(self):
        try:
            while self.out:
                n = self.sock.send(self.out)
                del self.out[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self.close(f'socket error: {e.strerror}')
            return
        self.loop.sel.modify(self.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0), self._on_event)

    def flush_blocking(self, timeout=1.0):
        if self.closed or not self.out:
            return
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(self.out)
            self.out.clear()
        except OSError:
            pass

    def close(self, reason='closed locally'):
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.on_close(self, reason)


# ---- the daemon ---------------------------------------------------------------------

HANDOFF_PHASES = ('draining', 'drained', 'sealing', 'releasing', 'sealed')


def now_ms():
    return int(time.time() * 1000)


def env_ms(name):
    raw = os.environ.get(name, '')
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        die(2, f'{name}={json.dumps(raw)} is not a number of milliseconds')


class Daemon:
    def __init__(self, spawn, data_dir):
        self.spawn = spawn
        self.data_dir = data_dir
        self.build_id = os.environ.get('KV_BUILD_ID', 'dev')
        self.loop = Loop()
        self.lock = DirLock(data_dir)
        self.store = None
        self.http = None
        self.control_path = spawn.control_socket or os.path.join(data_dir, '.handoff.sock')
        self.control = None
        self.control_identity = None
        self.capabilities = CAP_RECOVER_FROM_DISK | CAP_COMMIT_TO_SUCCESSOR
        if spawn.listeners:
            # The listening sockets are never closed (draining only stops accepting), and the
            # reserve copies are kept open, for a listener holder.
            self.capabilities |= CAP_RESERVE_LISTENERS | CAP_SPAWN_HOLDER
        self.mode = spawn.role  # 'cold' (incumbent) or 'successor'
        self.phase = 'init'
        self.session = None
        self.session_state = 'none'
        self.handoff_id = None
        self.last_seal = None
        self.hook = None  # (abort event, thread)
        self.stopping = False
        self.served = False
        self.orphaned = False
        self.channel = None
        self.seal_for_takeover = None
        self.seal_delay_ms = env_ms('KV_SEAL_DELAY_MS')
        self.open_delay_ms = env_ms('KV_OPEN_DELAY_MS')
        self.unhealthy_after_ms = env_ms('KV_UNHEALTHY_AFTER_MS')

    # -- shared
    def hb(self):
        return self.spawn.heartbeat_ms

    def lv(self):
        return self.spawn.liveness_ms

    def hello(self, role):
        return {'type': 'Hello', 'role': role, 'pid': os.getpid(), 'buildId': self.build_id.encode('utf-8')[:256].decode('utf-8', 'ignore'),
                'protoMin': PROTO_MIN, 'protoMax': PROTO_MAX, 'capabilities': self.capabilities}

    def open_store(self, stale=False):
        if self.open_delay_ms:
            time.sleep(self.open_delay_ms / 1000)
        self.store = Store(self.data_dir, drop_last=stale)

    def make_listeners(self):
        """The inherited listeners (listen() with the supervisor's backlog), or 127.0.0.1:$KV_PORT."""
        out = []
        if self.spawn.listeners:
            for name, fd, backlog, _ in self.spawn.listeners:
                sock = socket.socket(fileno=fd)
                if sock.type != socket.SOCK_STREAM:
                    raise EnvError(f'listener "{name}" (fd {fd}) is not a stream socket; the process that started this one must pass listening sockets')
                if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.getsockname()[1] == 0:
                    raise EnvError(f'listener "{name}" (fd {fd}) is a TCP socket bound to no address: listening on it would take a random port on every interface, so this process refuses; the process that started it must bind the socket first')
                # O_NONBLOCK belongs to the open file description, shared with every process
                # that holds the socket (Node's libuv expects it set): never clear it.
                sock.setblocking(False)
                try:
                    sock.listen(backlog)
                except OSError as e:
                    raise EnvError(f'listener "{name}" (fd {fd}): cannot listen on the inherited socket ({e.strerror}); it must be a bound stream socket, as handoff-supervisor and systemd pass them') from None
                out.append((name, sock))
        else:
            raw = os.environ.get('KV_PORT', '8080')
            if not raw.isdigit() or int(raw) > 65535:
                raise EnvError(f'KV_PORT={json.dumps(raw)} is not a port number')
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(('127.0.0.1', int(raw)))
            except OSError as e:
                raise EnvError(f'cannot listen on 127.0.0.1:{raw}: {e.strerror}; is another process using the port? set KV_PORT') from None
            sock.setblocking(False)
            sock.listen(DEFAULT_BACKLOG)
            out.append(('http', sock))
        return out

    def start_http(self):
        if self.http is None:
            self.http = HttpServer(self, self.make_listeners())
        self.http.start_accepting()
        return self.http.describe()

    def bind_control(self, replace):
        path = self.control_path
        try:
            exists = stat.S_ISSOCK(os.lstat(path).st_mode)
        except OSError:
            exists = False
        if exists:
            if not replace and self._answers(path):
                raise LockHeld(f'control socket {path} is served by a live process; is another daemon running on this data? stop it first')
            try:
                os.unlink(path)
            except OSError:
                pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        except OSError as e:
            raise LockHeld(f'cannot bind control socket {path}: {e.strerror}') from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        st = os.stat(path)
        self.control_identity = (st.st_dev, st.st_ino, st.st_ctime_ns)
        self.control = sock
        self.loop.sel.register(sock, selectors.EVENT_READ, self.on_control_accept)

    @staticmethod
    def _answers(path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(path)
            return True
        except socket.timeout:
            return True  # connected-but-slow: treat as alive, never steal a live path
        except OSError:
            return False
        finally:
            s.close()

    def unlink_control_if_ours(self):
        if self.control_identity is None:
            return
        try:
            st = os.stat(self.control_path)
            if (st.st_dev, st.st_ino, st.st_ctime_ns) == self.control_identity:
                os.unlink(self.control_path)
        except OSError:
            pass

    def now_serving(self, role, promoted, listening_on):
        self.served = True
        OUT.served()
        OUT.event('serving', buildId=self.build_id, role=role, promoted=promoted, listeningOn=listening_on, implementation='python')

    def exit(self, code, reason, unlink_control=True):
        """Ends the process: the lock is released by the kernel if still held."""
        if self.session is not None:
            self.session.flush_blocking()
        if self.channel is not None:
            self.channel.flush_blocking()
        if unlink_control:
            self.unlink_control_if_ours()
        if code == 0:
            OUT.event('exit', code=code, reason=reason)
        else:
            OUT.err(f'{PROG}: {reason}')
            if not self.served:
                OUT.write_failure_file()
        os._exit(code)

    def worker(self, name, fn):
        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        return t

    # -- start
    def run(self):
        signal.signal(signal.SIGTERM, lambda *_: self.loop.post(self.on_stop_signal))
        signal.signal(signal.SIGINT, lambda *_: self.loop.post(self.on_stop_signal))
        if self.mode == 'cold':
            self.cold_start()
        else:
            self.successor_start()
        self.loop.run()

    def cold_start(self):
        try:
            self.lock.acquire(10_000)
            self.open_store()
            listening = self.start_http()
            self.bind_control(replace=False)
        except EnvError as e:
            die(2, str(e))
        except (LockHeld, OSError, ValueError) as e:
            die(1, str(e))
        self.phase = 'serving'
        self.now_serving('cold', False, listening)

    # ---- incumbent (PROTOCOL.md section 10, "Incumbent") ----
    def in_handoff(self):
        return self.mode == 'cold' and self.phase in HANDOFF_PHASES

    def on_control_accept(self, _mask):
        try:
            conn, _ = self.control.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if self.stopping or self.phase in ('committed', 'exited'):
            conn.close()
            return
        previous, self.session = self.session, None
        if previous is not None:
            previous.close('replaced by a new supervisor session')
        self.session = Peer(self.loop, conn, self.on_session_message, self.on_session_close)
        self.session_state = 'hello'
        if self.in_handoff():
            self.resume('a new supervisor session replaced the one driving the handoff')
        self.session.send(self.hello('incumbent'))

    def on_session_close(self, peer, reason):
        if peer is not self.session:
            return
        self.session = None
        self.session_state = 'none'
        if self.in_handoff():
            self.resume(f'supervisor session ended: {reason}')

    def end_session(self, what):
        OUT.err(f'{PROG}: protocol violation by the supervisor: {what} (incumbent in phase {self.phase}, session {self.session_state})')
        peer, self.session = self.session, None
        self.session_state = 'none'
        if peer is not None:
            peer.close('protocol violation')
        if self.in_handoff():
            self.resume(f'protocol violation: {what}')

    def send(self, message):
        if self.session is not None:
            self.session.send(message)

    def on_session_message(self, peer, m):
        if peer is not self.session or self.phase in ('committed', 'exited') or self.stopping:
            return
        t = m['type']
        if t == 'HelloAck':
            if self.session_state != 'hello':
                return self.end_session('a second HelloAck')
            if not PROTO_MIN <= m['version'] <= PROTO_MAX:
                return self.end_session(f'HelloAck chose version {m["version"]}, outside {PROTO_MIN}..{PROTO_MAX}')
            self.session_state = 'established'
            return
        if self.session_state != 'established':
            return self.end_session(f'{t} before HelloAck')
        in_handoff = self.in_handoff()
        if in_handoff:
            self.loop.set_timer('liveness', self.lv(), self.on_incumbent_liveness)
        same = m.get('handoffId') == self.handoff_id
        if t == 'Heartbeat':
            return
        if t == 'PrepareHandoff':
            if self.phase != 'serving':
                return self.end_session('PrepareHandoff while a handoff is in progress')
            # cutWork true or false drains the same: this daemon tracks no long-lived work to cut.
            self.phase = 'draining'
            self.handoff_id = m['handoffId']
            self.loop.set_timer('liveness', self.lv(), self.on_incumbent_liveness)
            self.loop.set_timer('heartbeat', self.hb(), self.on_incumbent_heartbeat)
            self.start_hook('drain', lambda abort: self.drain_hook(abort, m['deadlineMs'], m['drainGraceMs']))
            return
        if t == 'SealRequest':
            if self.phase != 'drained' or not same:
                return self.end_session(f'SealRequest for {m["handoffId"]}')
            self.phase = 'sealing'
            self.start_hook('seal', self.seal_hook)
            return
        if t == 'Commit':
            if self.phase != 'sealed' or not same:
                return self.end_session(f'Commit for {m["handoffId"]}')
            self.phase = 'committed'
            self.loop.cancel_timer('liveness')
            self.loop.cancel_timer('heartbeat')
            # The successor owns the control socket's path now: leave it.
            self.exit(0, f'handoff {m["handoffId"]} committed; the successor serves', unlink_control=False)
        if t in ('Abort', 'ResumeAfterAbort'):
            if not in_handoff:
                return  # idempotent: resuming, or already serving again
            if m['handoffId'] is not None and m['handoffId'] != self.handoff_id:
                return self.end_session(f'{t} for another handoff ({m["handoffId"]})')
            return self.resume(f'{t}: {m["reason"]}')
        if t == 'Begin':
            return self.end_session('Begin is for successors')
        if t == 'SpawnHolder':
            if not self.capabilities & CAP_SPAWN_HOLDER:
                return self.end_session('SpawnHolder, and this daemon did not announce the SpawnHolder capability')
            if self.phase != 'serving':
                return self.send({'type': 'HolderSpawned', 'pid': None, 'error': f'a handoff is in progress (phase {self.phase}); ask again once it ends'})
            pid, error = self.spawn_holder(m['argv'], m['cwd'], m['env'])
            return self.send({'type': 'HolderSpawned', 'pid': pid, 'error': error})
        if t == 'Reload':
            # This daemon announces no Reload, so it is never in force here.
            return self.end_session('Reload on a session where the Reload capability is not in force (this daemon does not announce it)')

    def on_incumbent_heartbeat(self):
        if not self.in_handoff() or self.session_state != 'established':
            return
        self.send({'type': 'Heartbeat', 'ts': now_ms()})
        self.loop.set_timer('heartbeat', self.hb(), self.on_incumbent_heartbeat)

    def on_incumbent_liveness(self):
        if not self.in_handoff():
            return
        peer, self.session = self.session, None
        self.session_state = 'none'
        if peer is not None:
            peer.close('silent')
        self.resume(f'the supervisor sent nothing for {self.lv()} ms')

    def start_hook(self, name, fn):
        abort = threading.Event()

        def run():
            fn(abort)
        self.hook = (abort, self.worker(name, run))

    def drain_hook(self, abort, deadline_ms, grace_ms):
        try:
            remaining = self.http.drain(time.monotonic() + deadline_ms / 1000, grace_ms, abort)
            self.store.sync()
        except Exception as e:  # noqa: BLE001 - reported to the supervisor
            self.loop.post(self.on_hook_failed, 'draining', f'drain failed: {str(e) or type(e).__name__}')
            return
        self.loop.post(self.on_drain_done, remaining)

    def on_drain_done(self, remaining):
        if self.phase != 'draining':
            return
        self.phase = 'drained'
        self.send({'type': 'Drained', 'handoffId': self.handoff_id, 'openConnsRemaining': remaining, 'acceptClosed': True})

    def on_hook_failed(self, phase, error):
        """A drain or a seal failed (the lock is still held): SealFailed, then resume."""
        if self.phase != phase:
            return
        self.send({'type': 'SealFailed', 'handoffId': self.handoff_id, 'error': error[:4000]})
        self.resume(error)

    def seal_hook(self, abort):
        try:
            if self.seal_delay_ms:
                if abort.wait(self.seal_delay_ms / 1000):
                    return
            if os.environ.get('KV_SEAL_FAIL') == '1':
                raise RuntimeError('seal failed (KV_SEAL_FAIL=1)')
            self.store.close()
            report = {'revisions': [self.store.revision], 'fingerprint': f'rev-{self.store.revision}'}
        except Exception as e:  # noqa: BLE001 - reported to the supervisor
            self.loop.post(self.on_hook_failed, 'sealing', str(e) or type(e).__name__)
            return
        self.loop.post(self.on_seal_done, report)

    def on_seal_done(self, report):
        if self.phase != 'sealing':
            return
        self.phase = 'releasing'
        self.last_seal = report
        self.lock.release()
        self.phase = 'sealed'
        self.send({'type': 'SealComplete', 'handoffId': self.handoff_id, **report})

    def resume(self, reason):
        """Back to serving: abort the running hook, re-take the lock if released, reopen, accept."""
        OUT.err(f'{PROG}: resuming: {reason}')
        self.phase = 'resuming'
        self.loop.cancel_timer('liveness')
        self.loop.cancel_timer('heartbeat')
        hook, self.hook = self.hook, None

        def run():
            if hook is not None:
                hook[0].set()
                hook[1].join()
            try:
                if not self.lock.held:
                    try:
                        self.lock.acquire(max(3000, self.lv()))
                    except LockHeld as e:
                        self.loop.post(self.on_resume_failed, str(e), True)
                        return
                if self.store is None or self.store.closed:
                    self.open_store()
                self.http.start_accepting()
            except Exception as e:  # noqa: BLE001
                self.loop.post(self.on_resume_failed, str(e), False)
                return
            self.loop.post(self.on_resumed)
        self.worker('resume', run)

    def on_resumed(self):
        if self.phase != 'resuming':
            return
        self.phase = 'serving'
        self.handoff_id = None
        OUT.event('serving', buildId=self.build_id, role='incumbent', resumed=True, listeningOn=self.http.describe())
        if self.stopping:
            self.start_stop()

    def on_resume_failed(self, error, lock_taken):
        if self.phase != 'resuming':
            return
        self.phase = 'exited'
        if self.session is not None:
            peer, self.session = self.session, None
            peer.close('exiting')
        if lock_taken:
            self.exit(0, f'the successor holds the lock and serves; this incumbent exits ({error})', unlink_control=False)
        self.exit(1, f'could not resume after an aborted handoff: {error}')

    def spawn_holder(self, argv, cwd, env):
        """Starts a listener holder (PROTOCOL.md section 6): argv with exactly env plus the
        listeners at fds 3+i, LISTEN_FDS, LISTEN_FDNAMES and its own LISTEN_PID; stdio /dev/null;
        a new session. Returns (pid, '') or (None, why)."""
        if not os.path.isabs(argv[0]) or not os.path.isfile(argv[0]) or not os.access(argv[0], os.X_OK):
            return None, f'{argv[0]} is not an absolute path to an executable'
        if not os.path.isdir(cwd):
            return None, f'{cwd} is not a directory'
        if self.stopping or not self.spawn.listeners:
            return None, 'no listener to pass on (none inherited, or the daemon is stopping)'
        high = []
        try:
            for _, fd, _, reserves in self.spawn.listeners:
                high.append(fcntl.fcntl(reserves[-1] if reserves else fd, fcntl.F_DUPFD_CLOEXEC, 100))
            child_env = {}
            for entry in env:
                name, _, value = entry.partition('=')
                child_env[name] = value
            child_env['LISTEN_FDS'] = str(len(high))
            child_env['LISTEN_FDNAMES'] = ':'.join(name for name, _, _, _ in self.spawn.listeners)
            actions = [(os.POSIX_SPAWN_OPEN, 0, '/dev/null', os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_OPEN, 1, '/dev/null', os.O_WRONLY, 0),
                       (os.POSIX_SPAWN_OPEN, 2, '/dev/null', os.O_WRONLY, 0)]
            actions += [(os.POSIX_SPAWN_DUP2, h, 3 + i) for i, h in enumerate(high)]
            script = 'cd -- "$1" || exit 127; unset OLDPWD; shift; LISTEN_PID=$$; export LISTEN_PID; exec "$@"'
            pid = os.posix_spawn('/bin/sh', ['/bin/sh', '-c', script, 'sh', cwd, *argv], child_env, file_actions=actions,
                                 setsid=True, setsigdef=(signal.SIGPIPE, signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        except OSError as e:
            return None, f'cannot start {argv[0]}: {e.strerror}'
        finally:
            for h in high:
                os.close(h)
        threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()  # reap it if it exits while we run
        OUT.event('holderSpawned', holderPid=pid, argv=argv)
        return pid, ''

    # ---- successor (PROTOCOL.md section 10, "Successor") ----
    def successor_start(self):
        sock = socket.socket(fileno=self.spawn.channel_fd)
        self.channel = Peer(self.loop, sock, self.on_channel_message, self.on_channel_close)
        self.phase = 'awaitingAck'
        self.channel.send(self.hello('successor'))
        self.loop.set_timer('liveness', self.lv(), self.on_successor_liveness)
        self.loop.set_timer('heartbeat', self.hb(), self.on_successor_heartbeat)

    def successor_exit(self, code, reason):
        self.phase = 'exited'
        self.loop.cancel_timer('liveness')
        self.loop.cancel_timer('heartbeat')
        if self.channel is not None:
            self.channel.flush_blocking()
            channel, self.channel = self.channel, None
            channel.close('exiting')
        if self.http is not None or self.lock.held:
            # Listening already: let requests in flight finish, then release (by exiting).
            def run():
                if self.hook is not None:
                    self.hook[1].join()
                if self.http is not None:
                    self.http.drain(time.monotonic() + 2, 0, None)
                if self.store is not None:
                    try:
                        self.store.close()
                    except OSError:
                        pass
                self.lock.release()
                self.loop.post(self.exit, code, reason, False)
            self.worker('exit', run)
            return
        self.exit(code, reason, unlink_control=False)

    def successor_fail(self, what):
        self.successor_exit(1, f'protocol violation by the supervisor: {what} (successor in phase {self.phase})')

    def on_channel_message(self, peer, m):
        if peer is not self.channel or self.phase in ('committed', 'exited') or self.mode != 'successor':
            return
        if self.orphaned:
            return
        t = m['type']
        if t == 'HelloAck':
            if self.phase != 'awaitingAck':
                return self.successor_fail('a second HelloAck')
            if not PROTO_MIN <= m['version'] <= PROTO_MAX:
                return self.successor_fail(f'HelloAck chose version {m["version"]}, outside {PROTO_MIN}..{PROTO_MAX}')
            if m['handoffId'] is None:
                return self.successor_fail('HelloAck without a handoff id')
            self.handoff_id = m['handoffId']
            self.phase = 'awaitingBegin'
            self.loop.set_timer('liveness', self.lv(), self.on_successor_liveness)
            return
        if self.phase == 'awaitingAck':
            if t == 'Abort':
                return self.successor_exit(0, f'aborted by the supervisor: {m["code"]}: {m["reason"]}')
            return self.successor_fail(f'{t} before HelloAck')
        if t == 'Heartbeat':
            self.loop.set_timer('liveness', self.lv(), self.on_successor_liveness)
            return
        if t == 'Begin':
            if self.phase != 'awaitingBegin' or m['handoffId'] != self.handoff_id:
                return self.successor_fail(f'Begin for {m["handoffId"]}')
            self.phase = 'takingOver'
            self.seal_for_takeover = m['seal']
            if m['state'] is not None:
                OUT.err(f'{PROG}: Begin carries {len(m["state"])} bytes of application state, which this daemon does not use; ignored')
            self.loop.set_timer('liveness', self.lv(), self.on_successor_liveness)
            self.start_hook('takeover', self.takeover_hook)
            return
        if t == 'Commit':
            if self.phase != 'ready' or m['handoffId'] != self.handoff_id:
                return self.successor_fail(f'Commit for {m["handoffId"]}')
            return self.become_incumbent(False)
        if t == 'Abort':
            return self.successor_exit(0, f'aborted by the supervisor: {m["code"]}: {m["reason"]}')
        return self.successor_fail(f'{t} is for incumbents')

    def on_channel_close(self, peer, reason):
        if peer is not self.channel:
            return
        self.channel = None
        self.supervisor_gone(reason)

    def supervisor_gone(self, reason):
        if self.mode != 'successor' or self.phase in ('committed', 'exited'):
            return
        if self.phase in ('awaitingAck', 'awaitingBegin'):
            return self.successor_exit(0, f'the supervisor went away before Begin ({reason}); nothing was taken over')
        self.loop.cancel_timer('liveness')
        self.loop.cancel_timer('heartbeat')
        if self.phase == 'takingOver':
            self.orphaned = True
            OUT.err(f'{PROG}: the supervisor went away during the takeover ({reason}); serving alone if the lock is taken')
        elif self.phase == 'ready':
            self.become_incumbent(True)

    def on_successor_heartbeat(self):
        if self.orphaned or self.channel is None or self.phase in ('committed', 'exited'):
            return
        self.channel.send({'type': 'Heartbeat', 'ts': now_ms()})
        self.loop.set_timer('heartbeat', self.hb(), self.on_successor_heartbeat)

    def on_successor_liveness(self):
        if self.orphaned or self.phase in ('committed', 'exited'):
            return
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.close('silent')
        self.supervisor_gone(f'the supervisor sent nothing for {self.lv()} ms')

    def takeover_hook(self, _abort):
        seal = self.seal_for_takeover
        try:
            self.lock.acquire(10_000)
            self.open_store(stale=os.environ.get('KV_STALE') == '1' and seal is not None)
        except (LockHeld, OSError, ValueError) as e:
            self.loop.post(self.on_takeover_failed, str(e))
            return
        revisions = [self.store.revision]
        gap = explain_revision_gap(seal['revisions'], revisions) if seal is not None else None
        listening = []
        if gap is None:
            try:
                listening = self.start_http()
            except (EnvError, OSError) as e:
                self.loop.post(self.on_takeover_failed, str(e))
                return
        self.loop.post(self.on_takeover_done, listening, revisions, gap)

    def on_takeover_failed(self, error):
        if self.phase != 'takingOver':
            return
        self.successor_exit(1, f'takeover failed: {error}')

    def on_takeover_done(self, listening, revisions, gap):
        if self.phase != 'takingOver':
            return
        ready = {'type': 'Ready', 'handoffId': self.handoff_id, 'listeningOn': listening, 'healthy': True, 'revisions': revisions}
        if gap is not None:
            # Never serve data that does not continue the sealed data: say Ready (the supervisor
            # reports the precise reason) and exit.
            if not self.orphaned and self.channel is not None:
                self.channel.send(ready)
            return self.successor_exit(1, f'refusing to serve: {gap}')
        if self.orphaned:
            return self.become_incumbent(True)
        self.phase = 'ready'
        if self.channel is not None:
            self.channel.send(ready)

    def become_incumbent(self, promoted):
        self.loop.cancel_timer('liveness')
        self.loop.cancel_timer('heartbeat')
        if self.channel is not None:
            channel, self.channel = self.channel, None
            channel.close('committed')
        try:
            self.bind_control(replace=True)
        except (LockHeld, OSError) as e:
            self.exit(1, str(e))
        self.mode = 'cold'
        self.phase = 'serving'
        self.handoff_id = None
        self.hook = None
        self.now_serving('successor', promoted, self.http.describe())
        if self.stopping:
            self.start_stop()

    # ---- stop (SIGTERM, SIGINT) ----
    def on_stop_signal(self):
        if self.stopping:
            return
        self.stopping = True
        if self.mode == 'successor':
            if self.phase in ('awaitingAck', 'awaitingBegin'):
                return self.successor_exit(0, 'stopped before Begin; nothing was taken over')
            if self.phase == 'takingOver':
                return  # stop once the takeover is done (become_incumbent) or exit then
            return self.successor_exit(0, 'stopped')
        if self.phase == 'sealed':
            return self.exit(0, 'stopped: sealed, the lock is released', unlink_control=False)
        if self.phase == 'resuming':
            return  # on_resumed stops
        self.start_stop()

    def start_stop(self):
        self.phase = 'stopping'
        self.loop.cancel_timer('liveness')
        self.loop.cancel_timer('heartbeat')
        if self.session is not None:
            peer, self.session = self.session, None
            peer.close('stopping')
        hook, self.hook = self.hook, None

        def run():
            if hook is not None:
                hook[0].set()
                hook[1].join()
            try:
                self.http.drain(time.monotonic() + 10, 1000, None)
                if self.store is not None:
                    self.store.close()
                self.lock.release()
            except OSError as e:
                self.loop.post(self.exit, 1, f'stop failed: {e}; writes acknowledged before the stop are durable, later ones were refused')
                return
            self.loop.post(self.exit, 0, 'stopped: drained and sealed')
        self.worker('stop', run)

    # ---- HTTP requests (the API of apps/kv) ----
    def handle(self, method, url, body, conn, sock):
        """Returns (status, body, headers); status None when the answer was written here."""
        if url.startswith('/slow?ms='):
            try:
                ms = min(float(url[len('/slow?ms='):]), 60_000)
            except ValueError:
                ms = 0
            sock.sendall(b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\n')
            end = time.monotonic() + max(0, ms) / 1000
            while time.monotonic() < end and not conn.force:
                time.sleep(min(0.01, max(0, end - time.monotonic())))
            if not conn.force:
                sock.sendall(b'slow done')
            conn.force = True  # the connection closes after this answer
            return None, b'', None
        if url == '/ready':
            failing = self.unhealthy_after_ms is not None and (time.monotonic() - STARTED) * 1000 >= self.unhealthy_after_ms
            return (503, b'unhealthy (KV_UNHEALTHY_AFTER_MS)\n', None) if failing else (200, b'ready\n', None)
        if url == '/health':
            store = self.store
            health = {'pid': os.getpid(), 'buildId': self.build_id, 'revision': store.revision if store else 0, 'keys': len(store.map) if store else 0}
            return 200, json.dumps(health, separators=(',', ':'), ensure_ascii=False).encode('utf-8'), {'Content-Type': 'application/json'}
        if url.startswith('/kv/') and method in ('PUT', 'GET'):
            try:
                key = decode_uri_component(url[len('/kv/'):])
            except (ValueError, UnicodeDecodeError):
                return 400, b'malformed percent-encoding in the key\n', None
            if method == 'PUT':
                try:
                    revision = self.store.put(key, body.decode('utf-8', 'replace'))
                except (StoreClosed, OSError) as e:
                    return 503, str(e).encode('utf-8'), None
                return 200, json.dumps({'revision': revision}, separators=(',', ':')).encode('utf-8'), {'Content-Type': 'application/json'}
            value = self.store.get(key)
            return (404, b'', None) if value is None else (200, value.encode('utf-8'), None)
        return 404, b'', None


def _vector_bytes(obj):
    """The vectors file writes bytes (msgpack bin) as {"$bin": "<hex>"}."""
    return bytes.fromhex(obj['$bin']) if len(obj) == 1 and isinstance(obj.get('$bin'), str) else obj


def _with_defaults(message):
    """A vector's message as a decoder returns it: every optional field present (its default when left out)."""
    fields = SCHEMAS.get(message.get('type'), ((), []))[1]
    return {**message, **{name: spec[2] for name, spec in fields if spec[0] == 'optional' and name not in message}}


def _same(a, b):
    """Equality that also tells a bool from an int (False == 0 in Python)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _decodes_to(got, message):
    return len(got) == 1 and got[0][0] == 'ok' and _same(got[0][1], _with_defaults(message))


def check_vectors(path):
    """Checks the codec against vectors/v1.json: every canonical frame encoded byte for byte
    and decoded, every `accept` frame decoded, every `reject` frame refused with its code."""
    with open(path) as f:
        doc = json.load(f, object_hook=_vector_bytes)
    failures = 0
    checked = 0
    for v in doc['vectors']:
        checked += 1
        frame = bytes.fromhex(v['hex'])
        try:
            encoded = encode_frame(v['message'], v['direction'])
        except ProtocolError as e:
            encoded = f'{e.code}: {e}'.encode()
        if encoded != frame:
            print(f'FAIL encode {v["name"]}: {encoded.hex()} != {v["hex"]}')
            failures += 1
        got = FrameReader(v['direction']).feed(frame)
        if not _decodes_to(got, v['message']):
            print(f'FAIL decode {v["name"]}: {got}')
            failures += 1
    for v in doc.get('accept', []):
        checked += 1
        got = FrameReader(v['direction']).feed(bytes.fromhex(v['hex']))
        if not _decodes_to(got, v['message']):
            print(f'FAIL accept {v["name"]}: {got}')
            failures += 1
    for v in doc.get('reject', []):
        checked += 1
        reader = FrameReader(v['direction'])
        got = reader.feed(bytes.fromhex(v['hex']))
        if v.get('eof'):
            truncated = reader.end()
            if truncated is not None:
                got.append(('error', truncated))
        ok = len(got) == 1 and got[0][0] == 'error' and got[0][1].code == v['code'] and got[0][1].fatal == v['fatal']
        if not ok:
            print(f'FAIL reject {v["name"]}: {[(k, getattr(e, "code", e)) for k, e in got]}, expected {v["code"]}')
            failures += 1
    print(f'{checked} vectors, {failures} failures')
    return 1 if failures else 0


def main():
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    if len(sys.argv) == 3 and sys.argv[1] == '--check-vectors':
        sys.exit(check_vectors(sys.argv[2]))
    if len(sys.argv) > 1:
        OUT.err(f'usage: {PROG} (configured by its environment; see apps/kv-python/README.md) | --check-vectors <v1.json>')
        sys.exit(2)
    try:
        spawn = Spawn(os.environ)
    except EnvError as e:
        die(2, str(e))
    OUT.failure_file = spawn.failure_file
    if os.environ.get('KV_FAIL_START') == '1':
        die(3, 'KV_FAIL_START=1, exiting')
    if not spawn.data_dir:
        die(2, 'no data directory: run it under handoff-supervisor (which passes [daemon] data_dir as HANDOFF_DATA_DIR), or set KV_DATA_DIR')
    if not os.path.isdir(spawn.data_dir):
        die(2, f'the data directory {spawn.data_dir} does not exist or is not a directory; create it first')
    die_after = env_ms('KV_DIE_AFTER_MS')
    if die_after is not None:
        def crash():
            OUT.err(f'{PROG}: KV_DIE_AFTER_MS elapsed, crashing')
            os._exit(4)
        timer = threading.Timer(die_after / 1000, crash)
        timer.daemon = True
        timer.start()
    Daemon(spawn, os.path.abspath(spawn.data_dir)).run()


if __name__ == '__main__':
    main()
