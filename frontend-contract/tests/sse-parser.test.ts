import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SseParser, type SseFrame } from "../src/sse.js";

function parseAll(chunks: string[]): { frames: SseFrame[]; retry: number | undefined } {
  const parser = new SseParser();
  const frames = chunks.flatMap((c) => parser.push(c));
  return { frames, retry: parser.retry };
}

/** Decodes bytes split at one point, as streamRunEvents does (TextDecoder in stream mode). */
function parseBytesSplit(bytes: Uint8Array, at: number): SseFrame[] {
  const decoder = new TextDecoder("utf-8");
  const parser = new SseParser();
  return [
    ...parser.push(decoder.decode(bytes.subarray(0, at), { stream: true })),
    ...parser.push(decoder.decode(bytes.subarray(at), { stream: true })),
    ...parser.push(decoder.decode()),
  ];
}

const SAMPLE =
  ": connected\n" +
  "retry: 2500\n\n" +
  'event: run.started\nid: 1\ndata: {"type":"run.started","seq":1}\n\n' +
  ": ping\n" +
  'event: message.delta\r\nid: 2\r\ndata: {"type":"message.delta","seq":2,\r\ndata: "text":"héllo 🌍"}\r\n\r\n' +
  'event: message.delta\rid: 3\rdata: {"type":"message.delta","seq":3,"text":"ünïcode ✓"}\r\r' +
  'event: run.completed\nid: 4\ndata: {"type":"run.completed","seq":4}\n\n';

const EXPECTED: SseFrame[] = [
  { event: "run.started", id: "1", data: '{"type":"run.started","seq":1}' },
  { event: "message.delta", id: "2", data: '{"type":"message.delta","seq":2,\n"text":"héllo 🌍"}' },
  { event: "message.delta", id: "3", data: '{"type":"message.delta","seq":3,"text":"ünïcode ✓"}' },
  { event: "run.completed", id: "4", data: '{"type":"run.completed","seq":4}' },
];

describe("SseParser", () => {
  it("parses a whole stream with mixed line endings, comments and retry", () => {
    const { frames, retry } = parseAll([SAMPLE]);
    assert.deepEqual(frames, EXPECTED);
    assert.equal(retry, 2500);
  });

  it("yields the same frames for every two-way split of the characters", () => {
    for (let at = 0; at <= SAMPLE.length; at++) {
      assert.deepEqual(parseAll([SAMPLE.slice(0, at), SAMPLE.slice(at)]).frames, EXPECTED, `split at ${at}`);
    }
  });

  it("yields the same frames for every two-way split of the UTF-8 bytes", () => {
    const bytes = new TextEncoder().encode(SAMPLE);
    for (let at = 0; at <= bytes.length; at++) {
      assert.deepEqual(parseBytesSplit(bytes, at), EXPECTED, `split at byte ${at}`);
    }
  });

  it("yields the same frames when fed one character at a time", () => {
    assert.deepEqual(parseAll([...SAMPLE]).frames, EXPECTED);
  });

  it("treats CR then LF in the next chunk as one line end", () => {
    const { frames } = parseAll(["data: a\r", "\ndata: b\r", "\n\r", "\n"]);
    assert.deepEqual(frames, [{ event: "message", id: "", data: "a\nb" }]);
  });

  it("joins multi-line data with LF and strips one leading space only", () => {
    const { frames } = parseAll(["data:no space\ndata:  two spaces\ndata\ndata: last\n\n"]);
    assert.deepEqual(frames, [{ event: "message", id: "", data: "no space\n two spaces\n\nlast" }]);
  });

  it("ignores comments, unknown fields, bad retry values, and events without data", () => {
    const { frames, retry } = parseAll([": ping\n:\nfoo: bar\nretry: 12x\nevent: lonely\n\nid: 7\n\ndata: x\n\n"]);
    assert.deepEqual(frames, [{ event: "message", id: "7", data: "x" }]);
    assert.equal(retry, undefined);
  });

  it("keeps the last event id across frames and ignores ids containing NUL", () => {
    const { frames } = parseAll(["id: 5\ndata: a\n\ndata: b\n\nid: 6\u0000\ndata: c\n\n"]);
    assert.deepEqual(
      frames.map((f) => f.id),
      ["5", "5", "5"],
    );
  });

  it("strips a leading byte-order mark and discards an unterminated final frame", () => {
    const { frames } = parseAll(["\ufeffdata: a\n\ndata: unterminated\n"]);
    assert.deepEqual(frames, [{ event: "message", id: "", data: "a" }]);
  });
});
