// Runs MicroPython snippets on the MicroPython WebAssembly port (a 32-bit MicroPython:
// 31-bit small ints, like ESP32's). The Python side is cyphy/mp32.py; this is its helper.
//
//   node mp32_driver.mjs <path to micropython.mjs>   < batch.json   > one JSON line per job
//
// batch.json: {"exec_step": Python defining _cyphy_exec, "blobs": {id: base64}, "jobs": [{"steps": [str, ...], "heap": bytes,
//              "pystack": words, "files": {path in the port's filesystem: blob id},
//              "romfs": blob id (optional)}]}
// Every job gets a fresh interpreter (its own heap), its files written into the port's
// in-memory filesystem (/lib is on sys.path), then runs its steps in order as __main__,
// in one globals dict, each in its own call into the port, until one fails. After each
// step the heap is settled and measured: this port's gc.collect() frees nothing while a
// call into it is running (an object dropped inside a call stays allocated until a later
// call collects), so the driver collects in two further calls of their own and then reads
// gc.mem_alloc() and micropython.mem_info(1). Each result line: {"stdout", "stderr",
// "status" (0, SystemExit's code, or 1 for an uncaught exception), "heap_initial",
// "heap_total" (GC arena bytes before and after the steps: the port grows its heap when
// an allocation does not fit, and a collection inside a call frees nothing, so it grows
// for garbage too), "settled": [{"used": gc.mem_alloc(), "max_free": bytes of the
// largest free run, "total": arena bytes}] one per step that ran, "heap_used" (the last
// step's "used"), "ms"}. Lines are written as jobs finish, so a caller that times out
// knows which job hung.
import { readFileSync, writeSync } from "node:fs";
import { pathToFileURL } from "node:url";

const { loadMicroPython } = await import(pathToFileURL(process.argv[2]).href);
const batch = JSON.parse(readFileSync(0, "utf8"));
const blobs = {};
for (const [id, b64] of Object.entries(batch.blobs || {})) blobs[id] = Buffer.from(b64, "base64");

// Runs the job's code from /__snippet__.py with _cyphy_exec (batch.exec_step, mp32.EXEC_STEP:
// exceptions are caught in Python after unlocking the heap, since an exception reaching the
// port's JS glue while the heap is still locked makes the port spin forever converting it).
const WRAPPER = `
def _cyphy_run():
    import gc, micropython, sys
    with open('/__snippet__.py') as f:
        src = f.read()
    rc = _cyphy_exec(src, _cyphy_g)
    src = None
    import _cyphy_sink
    _cyphy_sink.meta()
    micropython.mem_info()
    _cyphy_sink.out()
    gc.collect()
    return rc, gc.mem_alloc()
_cyphy_rc, _cyphy_used = _cyphy_run()
`;
const SETTLE = "import gc\ngc.collect()\n";
const MEASURE = "import gc, micropython\n_cyphy_used = gc.mem_alloc()\nmicropython.mem_info(1)\n";
const MEM = "import micropython\nmicropython.mem_info()\n";

function maxFree(text) {
  const m = /max free sz: (\d+)/.exec(text);
  return m ? parseInt(m[1], 10) * 16 : -1;   // blocks of 16 bytes on a 32-bit port
}

function gcTotal(text) {
  const m = /GC: total: (\d+)/.exec(text);
  return m ? parseInt(m[1], 10) : -1;
}

function dirname(p) {
  const i = p.lastIndexOf("/");
  return i > 0 ? p.slice(0, i) : "/";
}

const decoder = new TextDecoder();
for (const job of batch.jobs) {
  const t0 = performance.now();
  const sinks = { out: [], err: [], meta: [] };
  let sink = "out";
  const mp = await loadMicroPython({
    heapsize: job.heap ?? 1048576,
    pystack: job.pystack ?? 2048,
    linebuffer: false,
    // a ROMFS image (MicroPython 1.29+): kept outside the GC heap and mounted at /rom
    ...(job.romfs ? { romfs: blobs[job.romfs] } : {}),
    stdout: (b) => { sinks[sink === "out" ? "out" : "meta"].push(b[0]); },
    stderr: (b) => { sinks[sink === "out" ? "err" : "meta"].push(b[0]); },
  });
  for (const [path, id] of Object.entries(job.files || {})) {
    mp.FS.mkdirTree(dirname(path));
    mp.FS.writeFile(path, blobs[id]);
  }
  // the wrapper reads the heap's size at the end of the code (mem_info) into `meta`
  mp.registerJsModule("_cyphy_sink", { meta: () => { sink = "meta"; }, out: () => { sink = "out"; } });
  const text = (a) => decoder.decode(new Uint8Array(a));
  sink = "meta";
  mp.runPython(batch.exec_step);
  mp.runPython(MEM);
  const heapInitial = gcTotal(text(sinks.meta));
  sinks.meta = [];
  mp.runPython("_cyphy_g = {'__name__': '__main__'}");
  let status = 0;
  let used = -1;
  let heapTotal = heapInitial;
  const settled = [];
  for (const code of job.steps) {
    mp.FS.writeFile("/__snippet__.py", code);
    sink = "out";
    try {
      mp.runPython(WRAPPER);
      status = mp.globals.get("_cyphy_rc");
    } catch (e) {
      // only the wrapper's own failures land here (e.g. no memory left for it)
      sinks.err.push(...Buffer.from(`mp32: ${e.type || e.name}: ${e.message}\n`));
      status = 1;
    }
    if (status !== 0) break;
    sinks.meta = [];
    sink = "meta";
    mp.runPython(SETTLE);
    mp.runPython(SETTLE);
    mp.runPython(MEASURE);
    const t = text(sinks.meta);
    used = mp.globals.get("_cyphy_used");
    heapTotal = gcTotal(t);
    settled.push({ used, max_free: maxFree(t), total: heapTotal });
  }
  const line = JSON.stringify({
    stdout: text(sinks.out), stderr: text(sinks.err), status,
    heap_initial: heapInitial, heap_total: heapTotal, heap_used: used, settled,
    ms: performance.now() - t0,
  }) + "\n";
  writeSync(1, line);
}
