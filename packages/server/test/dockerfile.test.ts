import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { NsError } from '@nullspace/runtime';
import { DEFAULT_PATH, parseDockerfile, resolveBuildSpec, shellJoin, shellQuote, type DockerfileOptions } from '../src/templates/dockerfile.js';

/** The Dockerfile subset (packages/server/src/templates/dockerfile.ts): what each instruction becomes, and every refusal with its line. */

const parse = (text: string, opts?: DockerfileOptions) => parseDockerfile(text, opts);
const steps = (text: string, opts?: DockerfileOptions) => parse(text, opts).steps;
const startCmd = (text: string) => parse(text).start?.cmd ?? null;

/** The error parsing `text` throws (fails the test when it parses). */
function refusal(text: string, opts?: DockerfileOptions): NsError {
  try {
    parseDockerfile(text, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(NsError);
    return err as NsError;
  }
  throw new Error(`parsed without error:\n${text}`);
}

/** Expects `text` refused as invalid_dockerfile at `line` for `instruction`, with a message matching `msg`. */
function refused(text: string, line: number, instruction: string | null, msg: RegExp, opts?: DockerfileOptions): void {
  const err = refusal(text, opts);
  expect(err.code, err.message).toBe('invalid_dockerfile');
  expect(err.message).toMatch(new RegExp(`^line ${line}: `));
  expect(err.message).toMatch(msg);
  expect(err.details).toEqual({ line, instruction });
}

/** The arguments `/bin/sh` sees when it runs `command` as the words after printf. */
function shellArgs(command: string): string[] {
  const r = spawnSync('/bin/sh', ['-c', `printf '%s\\0' ${command}`], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.split('\0').slice(0, -1);
}

describe('Dockerfile: FROM', () => {
  it('a template by name or name:VERSION, an image otherwise, an archive of the context with ctx:', () => {
    expect(parse('FROM base').from).toEqual({ template: 'base' });
    expect(parse('FROM base:3').from).toEqual({ template: 'base:3' });
    const isTemplate = (n: string) => ['base', 'my-node'].includes(n);
    expect(parse('FROM my-node:2', { isTemplate }).from).toEqual({ template: 'my-node:2' });
    // a name no template has is an image (Docker Hub's debian), as is anything with a registry, a tag or a digest
    expect(parse('FROM debian', { isTemplate }).from).toEqual({ image: 'debian' });
    expect(parse('FROM debian:12', { isTemplate }).from).toEqual({ image: 'debian:12' });
    expect(parse('FROM my-node:bookworm', { isTemplate }).from).toEqual({ image: 'my-node:bookworm' });
    expect(parse('FROM registry.example:5000/team/app:1').from).toEqual({ image: 'registry.example:5000/team/app:1' });
    expect(parse(`FROM alpine@sha256:${'a'.repeat(64)}`).from).toEqual({ image: `alpine@sha256:${'a'.repeat(64)}` });
    expect(parse('FROM ctx:images/./app.tar').from).toEqual({ archive: 'ctx:images/app.tar' });
    expect(parse('from base').from).toEqual({ template: 'base' }); // instructions are case-insensitive
    expect(parse('FROM --platform=linux/amd64 base').from).toEqual({ template: 'base' });
  });

  it('refuses stages, scratch, other platforms, bad references, archives outside the context and a missing FROM', () => {
    refused('FROM base AS build', 1, 'FROM', /multi-stage builds are not supported/);
    refused('FROM base\nRUN true\nFROM base', 3, 'FROM', /a second FROM: multi-stage/);
    refused('FROM scratch', 1, 'FROM', /FROM scratch is not supported/);
    refused('FROM --platform=linux/arm64 base', 1, 'FROM', /only linux\/amd64/);
    refused('FROM --foo=1 base', 1, 'FROM', /FROM takes no flag --foo/);
    refused('FROM Bad_Image!', 1, 'FROM', /"Bad_Image!" is not an image reference/);
    refused('FROM a b', 1, 'FROM', /FROM takes one template or image/);
    refused('FROM ctx:../outside.tar', 1, 'FROM', /is outside the build context/);
    refused('FROM $NOTHING', 1, 'FROM', /FROM names nothing/);
    refused('# only a comment\n', 1, 'FROM', /has no FROM/);
    refused('ARG A=1\nARG B=2', 2, 'FROM', /has no FROM/);
    refused('RUN true\nFROM base', 1, 'RUN', /RUN before FROM: only ARG may come before FROM/);
  });
});

describe('Dockerfile: RUN', () => {
  it('the shell form as written, continuations joined (comments and empty lines in them dropped), the exec form quoted', () => {
    expect(steps('FROM base\nRUN apt-get update && echo "a  b" # not a comment')).toEqual([{ type: 'run', cmd: 'apt-get update && echo "a  b" # not a comment' }]);
    expect(steps('FROM base\nRUN apt-get update \\\n    # a comment line\n\n    && apt-get install -y jq  \\  \n    && true')).toEqual([
      { type: 'run', cmd: 'apt-get update     && apt-get install -y jq      && true' },
    ]);
    expect(steps('FROM base\nRUN ["sh", "-c", "echo $HOME; exit 3"]')).toEqual([{ type: 'run', cmd: "sh -c 'echo $HOME; exit 3'" }]);
    // a shell command that starts with [ is the shell form (not JSON), as in Docker
    expect(steps('FROM base\nRUN [ -f /etc/os-release ] && echo yes')).toEqual([{ type: 'run', cmd: '[ -f /etc/os-release ] && echo yes' }]);
    // << of arithmetic and here-strings is no heredoc
    expect(steps('FROM base\nRUN echo $((1<<4)) && cat <<< word')).toEqual([{ type: 'run', cmd: 'echo $((1<<4)) && cat <<< word' }]);
  });

  it('refuses heredocs, RUN flags, a malformed exec form and an empty command, naming the line', () => {
    refused('FROM base\n\nRUN <<EOF\necho hi\nEOF', 3, 'RUN', /heredocs \(<<EOF\) are not supported/);
    refused('FROM base\nRUN python3 - <<"PY"', 2, 'RUN', /heredocs/);
    refused('FROM base\nRUN cat <<-END > /x', 2, 'RUN', /heredocs/);
    refused('FROM base\nRUN --mount=type=cache,target=/root/.cache pip install x', 2, 'RUN', /RUN --mount is not supported/);
    refused('FROM base\nRUN --network=none true', 2, 'RUN', /RUN --network is not supported/);
    refused('FROM base\nRUN ["echo", 1]', 2, 'RUN', /exec form must be a JSON array of strings/);
    refused('FROM base\nRUN []', 2, 'RUN', /RUN needs a command/);
    refused('FROM base\nRUN', 2, 'RUN', /RUN needs arguments/);
    refused(`FROM base\nRUN echo ${'x'.repeat(140_000)}`, 2, 'RUN', /longer than 131071 bytes/);
  });
});

describe('Dockerfile: COPY and ADD', () => {
  it('context sources to guest paths, with --chown and --chmod, the JSON form, several sources into a directory', () => {
    expect(steps('FROM base\nCOPY app/ /srv/app')).toEqual([{ type: 'copy', src: 'app', dest: '/srv/app' }]);
    expect(steps('FROM base\nCOPY --chown=user:user --chmod=755 ./a/../b.txt /x/')).toEqual([{ type: 'copy', src: 'b.txt', dest: '/x/', chown: 'user:user', mode: '0755' }]);
    expect(steps('FROM base\nCOPY --chown=1000 . /app')).toEqual([{ type: 'copy', src: '.', dest: '/app', chown: '1000' }]);
    expect(steps('FROM base\nCOPY ["my file", "package*.json", "/srv/"]')).toEqual([
      { type: 'copy', src: 'my file', dest: '/srv/' },
      { type: 'copy', src: 'package*.json', dest: '/srv/' },
    ]);
    expect(steps('FROM base\nADD conf.txt /etc/app.conf')).toEqual([{ type: 'copy', src: 'conf.txt', dest: '/etc/app.conf' }]);
    // a relative destination is relative to the WORKDIR before it (kept relative when none is known)
    expect(steps('FROM base\nCOPY a rel/').at(-1)).toEqual({ type: 'copy', src: 'a', dest: 'rel/' });
    expect(steps('FROM base\nWORKDIR /srv\nCOPY a b\nCOPY c .\nCOPY d sub/').slice(1)).toEqual([
      { type: 'copy', src: 'a', dest: '/srv/b' },
      { type: 'copy', src: 'c', dest: '/srv/' },
      { type: 'copy', src: 'd', dest: '/srv/sub/' },
    ]);
  });

  it('refuses sources outside the context, URLs, archives to unpack, other flags, heredocs', () => {
    refused('FROM base\nCOPY ../secret /x', 2, 'COPY', /COPY source "\.\.\/secret" is outside the build context/);
    refused('FROM base\nCOPY a/../../secret /x', 2, 'COPY', /is outside the build context/);
    refused('FROM base\n\n\nCOPY /etc/passwd /x', 4, 'COPY', /COPY source "\/etc\/passwd" is absolute/);
    refused('FROM base\nCOPY ["..", "/x"]', 2, 'COPY', /is outside the build context/);
    refused('FROM base\nADD ../x /x', 2, 'ADD', /outside the build context/);
    refused('FROM base\nADD https://example.com/x.tgz /x', 2, 'ADD', /ADD of a URL is not supported/);
    refused('FROM base\nADD git@github.com:a/b.git /x', 2, 'ADD', /ADD of a URL/);
    refused('FROM base\nADD dist.tar.gz /srv/', 2, 'ADD', /would unpack it/);
    refused('FROM base\nADD rootfs.tar /', 2, 'ADD', /would unpack it/);
    refused('FROM base\nCOPY a b /dest', 2, 'COPY', /several sources needs a destination directory ending with \//);
    refused('FROM base\nCOPY onlyone', 2, 'COPY', /needs a source and a destination/);
    refused('FROM base\nCOPY --from=build /a /b', 2, 'COPY', /--from: multi-stage/);
    refused('FROM base\nCOPY --link a /b', 2, 'COPY', /COPY --link is not supported/);
    refused('FROM base\nCOPY --chmod=u+x a /b', 2, 'COPY', /only octal modes/);
    refused('FROM base\nCOPY --chown= a /b', 2, 'COPY', /--chown needs a value/);
    refused('FROM base\nCOPY --chown=a!b a /b', 2, 'COPY', /not an owner/);
    refused('FROM base\nCOPY <<EOF /x\nhello\nEOF', 2, 'COPY', /heredocs/);
  });
});

describe('Dockerfile: ENV, ARG and substitution', () => {
  it('ENV in both forms, quotes and escapes removed, substituted from earlier ENVs, ARGs and the base environment', () => {
    expect(steps('FROM base\nENV A=1 B="two words" C=a\\ b D=\'$A\'')).toEqual([{ type: 'env', envs: { A: '1', B: 'two words', C: 'a b', D: '$A' } }]);
    expect(steps('FROM base\nENV GREETING hello   big world')).toEqual([{ type: 'env', envs: { GREETING: 'hello   big world' } }]);
    // within one ENV, a reference sees the value from before it (Docker)
    expect(steps('FROM base\nENV A=old\nENV A=new B=$A').at(-1)).toEqual({ type: 'env', envs: { A: 'new', B: 'old' } });
    expect(steps('FROM base\nENV PATH=/opt/bin:$PATH').at(-1)).toEqual({ type: 'env', envs: { PATH: `/opt/bin:${DEFAULT_PATH}` } });
    expect(steps('FROM base\nENV PATH=/opt/bin:${PATH}', { baseEnv: { PATH: '/bin' } }).at(-1)).toEqual({ type: 'env', envs: { PATH: '/opt/bin:/bin' } });
    expect(steps('FROM base\nENV X="${UNSET:-dflt}" Y=${PATH:+set} Z=${UNSET+no}|"\\$lit"').at(-1)).toEqual({ type: 'env', envs: { X: 'dflt', Y: 'set', Z: '|$lit' } });
    refused('FROM base\nENV 1BAD=x', 2, 'ENV', /"1BAD" is not a variable name/);
    refused('FROM base\nENV ONLYNAME', 2, 'ENV', /needs a value/);
    refused('FROM base\nENV A="unclosed', 2, 'ENV', /a double quote is not closed/);
    refused('FROM base\nENV A=${B#prefix}', 2, 'ENV', /unsupported substitution/);
    refused('FROM base\nENV A=${MISSING:?required}', 2, 'ENV', /MISSING: required/);
  });

  it('ARG: defaults, build args replace them, global ARGs only in FROM unless declared again, RUN gets ARGs in its environment', () => {
    const text = [
      'ARG BASE=base', //         1: global, for FROM
      'ARG VERSION=1', //         2
      'FROM ${BASE}', //          3
      'RUN echo $VERSION', //     4: a global ARG is not in the stage
      'ARG VERSION', //           5: declared again: keeps its global value
      'ARG DIR=/opt/$VERSION', // 6
      'WORKDIR $DIR', //          7
      "ARG MSG='hi there'", //    8
      'RUN echo $MSG', //         9
      'ENV MSG=from-env', //      10: an ENV of the same name wins
      'RUN echo $MSG', //         11
    ].join('\n');
    const plain = parse(text);
    expect(plain.from).toEqual({ template: 'base' });
    expect(plain.steps).toEqual([
      { type: 'run', cmd: 'echo $VERSION' },
      { type: 'workdir', path: '/opt/1' },
      { type: 'run', cmd: "export VERSION=1 DIR=/opt/1 MSG='hi there'; echo $MSG" },
      { type: 'env', envs: { MSG: 'from-env' } },
      { type: 'run', cmd: 'export VERSION=1 DIR=/opt/1; echo $MSG' },
    ]);
    expect(plain.args).toEqual({ VERSION: '1', DIR: '/opt/1', MSG: 'hi there' });
    expect(plain.warnings).toEqual([]);

    const withArgs = parse(text, { buildArgs: { VERSION: '2', BASE: 'my-node:4', EXTRA: 'x' }, isTemplate: (n) => n === 'my-node' });
    expect(withArgs.from).toEqual({ template: 'my-node:4' });
    expect(withArgs.steps[1]).toEqual({ type: 'workdir', path: '/opt/2' });
    expect(withArgs.warnings).toEqual(['build arg EXTRA is not declared by an ARG of the Dockerfile: not used']);
    // a value with shell characters reaches RUN quoted
    expect(steps('FROM base\nARG X\nRUN echo "$X"', { buildArgs: { X: "it's; rm -rf /" } })[0]).toEqual({ type: 'run', cmd: `export X='it'\\''s; rm -rf /'; echo "$X"` });
    // declared without value and not given: not set
    expect(steps('FROM base\nARG X\nRUN echo $X')[0]).toEqual({ type: 'run', cmd: 'echo $X' });
    refused('FROM base\nARG 9x=1', 2, 'ARG', /"9x" is not a variable name/);
    expect(() => parse('FROM base', { buildArgs: { 'bad-name': '1' } })).toThrow(expect.objectContaining({ code: 'invalid_build_spec' }));
  });
});

describe('Dockerfile: WORKDIR, USER, EXPOSE, LABEL', () => {
  it('WORKDIR absolute or relative to the one before, USER by name, EXPOSE of TCP ports', () => {
    expect(steps('FROM base\nWORKDIR /srv/\nWORKDIR app\nWORKDIR ../lib\nWORKDIR "/with space"')).toEqual([
      { type: 'workdir', path: '/srv' },
      { type: 'workdir', path: '/srv/app' },
      { type: 'workdir', path: '/srv/lib' },
      { type: 'workdir', path: '/with space' },
    ]);
    expect(steps('FROM base\nWORKDIR rel')).toEqual([{ type: 'workdir', path: 'rel' }]);
    expect(steps('FROM base\nUSER user')).toEqual([{ type: 'user', name: 'user' }]);
    expect(steps('FROM base\nARG P=9000\nEXPOSE 3000 8080/tcp $P')).toEqual([
      { type: 'expose', port: 3000 },
      { type: 'expose', port: 8080 },
      { type: 'expose', port: 9000 },
    ]);
    expect(steps('FROM base\nLABEL org.opencontainers.image.title="x"\nMAINTAINER someone')).toEqual([]);
  });

  it('refuses a uid or group for USER, UDP, ranges and out-of-range ports', () => {
    refused('FROM base\nUSER 1000', 2, 'USER', /a uid is not supported/);
    refused('FROM base\nUSER user:staff', 2, 'USER', /a group is not supported/);
    refused('FROM base\nUSER Bad$', 2, 'USER', /is not a user name/);
    refused('FROM base\nEXPOSE 53/udp', 2, 'EXPOSE', /only TCP/);
    refused('FROM base\nEXPOSE 8000-8010', 2, 'EXPOSE', /is not a port/);
    refused('FROM base\nEXPOSE 70000', 2, 'EXPOSE', /integer from 1 to 65535/);
    refused('FROM base\nWORKDIR ""', 2, 'WORKDIR', /is empty/);
  });
});

describe('Dockerfile: CMD and ENTRYPOINT as the start command', () => {
  it('the shell form as written, the exec form safely quoted, ENTRYPOINT + CMD joined as Docker does', () => {
    expect(startCmd('FROM base')).toBe(null);
    expect(startCmd('FROM base\nCMD node server.js --port $PORT')).toBe('node server.js --port $PORT');
    expect(startCmd('FROM base\nCMD ["node", "server.js"]')).toBe('node server.js');
    expect(startCmd('FROM base\nCMD ["python3", "-c", "print(\'hi\')"]')).toBe(`python3 -c 'print('\\''hi'\\'')'`);
    expect(startCmd('FROM base\nENTRYPOINT ["node"]\nCMD ["server.js"]')).toBe('node server.js');
    // the last CMD counts, wherever ENTRYPOINT is
    expect(startCmd('FROM base\nCMD ["a.js"]\nENTRYPOINT ["node", "--max-old-space-size=256"]\nCMD ["b.js"]')).toBe('node --max-old-space-size=256 b.js');
    // an exec-form ENTRYPOINT with a shell-form CMD gets it as /bin/sh -c CMD
    expect(startCmd('FROM base\nENTRYPOINT ["tini", "--"]\nCMD exec node app.js')).toBe(`tini -- /bin/sh -c 'exec node app.js'`);
    // a shell-form ENTRYPOINT ignores CMD
    expect(startCmd('FROM base\nENTRYPOINT exec node app.js\nCMD ["ignored"]')).toBe('exec node app.js');
    expect(startCmd('FROM base\nENTRYPOINT ["/docker-entrypoint.sh"]')).toBe('/docker-entrypoint.sh');
    expect(startCmd('FROM base\nCMD []')).toBe(null);
    expect(parse('FROM base\nCMD ["x"]').start).toEqual({ cmd: 'x', ready: null, timeoutMs: 60000 });
    refused('FROM base\nCMD ["node", {"a": 1}]', 2, 'CMD', /JSON array of strings/);
  });

  it('quotes every argument so that the shell passes exactly it', () => {
    const nasty = ['plain', 'two words', "it's", '$HOME', '`id`', '$(id)', 'a;b', 'a|b&c', '*', '~', '#hash', '', 'new\nline', '"dq"', 'back\\slash', 'FOO=bar', '-n', 'ü'];
    expect(shellArgs(shellJoin(nasty))).toEqual(nasty);
    // the exec form of a start command runs exactly its argv
    const start = startCmd(`FROM base\nCMD ${JSON.stringify(['FOO=bar', '$(touch /tmp/pwned)', "a'b"])}`)!;
    expect(shellArgs(start)).toEqual(['FOO=bar', '$(touch /tmp/pwned)', "a'b"]);
    expect(shellQuote('node')).toBe('node');
    // a first word with = is quoted, else the shell takes it as an assignment and runs nothing
    expect(shellJoin(['FOO=bar', 'A=b'])).toBe("'FOO=bar' A=b");
    expect(spawnSync('/bin/sh', ['-c', shellJoin(['FOO=bar'])]).status).toBe(127);
  });
});

describe('Dockerfile: refused instructions, directives, comments', () => {
  it('refuses HEALTHCHECK, ONBUILD, VOLUME, STOPSIGNAL, SHELL and unknown instructions with their line', () => {
    const cases: Array<[string, RegExp]> = [
      ['HEALTHCHECK CMD curl -f localhost', /HEALTHCHECK is not supported: the start command's ready check/],
      ['ONBUILD RUN true', /ONBUILD is not supported/],
      ['VOLUME /data', /VOLUME is not supported/],
      ['STOPSIGNAL SIGTERM', /STOPSIGNAL is not supported/],
      ['SHELL ["/bin/zsh", "-c"]', /SHELL is not supported/],
      ['FROBNICATE x', /unknown instruction FROBNICATE/],
    ];
    for (const [line, msg] of cases) {
      refused(`# a comment\nFROM base\nRUN true\n${line}\nRUN true`, 4, line.split(' ')[0]!, msg);
    }
    // refused before FROM too, by the same message
    refused('VOLUME /data\nFROM base', 1, 'VOLUME', /VOLUME is not supported/);
  });

  it('line numbers count comments, empty lines, directives and continuation lines', () => {
    refused('# syntax=docker/dockerfile:1\n\n# hello\nFROM base\nRUN a \\\n  b \\\n  c\n\nCOPY ../x /y', 9, 'COPY', /outside/);
  });

  it('# escape= changes the escape character; # syntax and # check are ignored; a directive later is a comment', () => {
    const text = '# syntax=docker/dockerfile:1\n# escape=`\nFROM base\nRUN echo one `\n  two\nCOPY C:\\dir\\file.txt /x';
    expect(steps(text)).toEqual([
      { type: 'run', cmd: 'echo one   two' },
      { type: 'copy', src: 'C:\\dir\\file.txt', dest: '/x' },
    ]);
    // after an instruction or a comment, `# escape=` is only a comment
    expect(steps('# hello\n# escape=`\nFROM base\nRUN a \\\n b')).toEqual([{ type: 'run', cmd: 'a  b' }]);
    refused('# escape=x\nFROM base', 1, null, /the escape directive takes/);
    refused('# escape=\\\n# escape=`\nFROM base', 2, null, /given twice/);
    expect(steps('FROM base\r\nRUN a \\\r\n b\r\n')).toEqual([{ type: 'run', cmd: 'a  b' }]);
    expect(parse('\uFEFFFROM base').from).toEqual({ template: 'base' }); // a byte-order mark is not part of the first instruction
  });

  it('every refusal is an NsError invalid_dockerfile thrown before any step is returned', () => {
    const err = refusal('FROM base\nRUN ok\nCOPY ../x /y\nRUN never');
    expect(err).toMatchObject({ code: 'invalid_dockerfile', message: 'line 3: COPY source "../x" is outside the build context', details: { line: 3, instruction: 'COPY' } });
  });
});

describe('resolveBuildSpec: a spec with a Dockerfile', () => {
  it("appends the spec's steps after the Dockerfile's; the spec's start replaces CMD", () => {
    const r = resolveBuildSpec(
      { dockerfile: 'FROM base\nRUN one\nCMD ["node", "a.js"]', steps: [{ type: 'run', cmd: 'two' }], start: { cmd: 'node b.js', ready: { port: 3000 } } },
      { buildArgs: {} },
    );
    expect(r).toEqual({ from: { template: 'base' }, steps: [{ type: 'run', cmd: 'one' }, { type: 'run', cmd: 'two' }], start: { cmd: 'node b.js', ready: { port: 3000 }, timeoutMs: 60000 }, warnings: [] });
    expect(resolveBuildSpec({ dockerfile: 'FROM base\nCMD ["node", "a.js"]' }).start).toEqual({ cmd: 'node a.js', ready: null, timeoutMs: 60000 });
  });

  it('without a Dockerfile the spec is the build; build args are then a warning', () => {
    expect(resolveBuildSpec({ from: { image: 'debian:12' } }, { buildArgs: { A: '1' } })).toEqual({
      from: { image: 'debian:12' },
      steps: [],
      start: null,
      warnings: ['build args (A) are used only by a Dockerfile: not used'],
    });
  });

  it('refuses a from and a dockerfile together, and a Dockerfile problem as invalid_dockerfile', () => {
    expect(() => resolveBuildSpec({ from: { template: 'base' }, dockerfile: 'FROM base' })).toThrow(expect.objectContaining({ code: 'invalid_build_spec', details: { field: 'spec.from' } }));
    expect(() => resolveBuildSpec({ dockerfile: 'FROM base\nVOLUME /x' })).toThrow(expect.objectContaining({ code: 'invalid_dockerfile', details: { line: 2, instruction: 'VOLUME' } }));
    const many = Array.from({ length: 300 }, () => ({ type: 'run', cmd: 'true' }));
    const df = `FROM base\n${'RUN true\n'.repeat(300)}`;
    expect(() => resolveBuildSpec({ dockerfile: df, steps: many })).toThrow(expect.objectContaining({ code: 'invalid_build_spec' }));
  });
});
