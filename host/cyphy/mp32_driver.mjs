// Runs MicroPython snippets on the MicroPython WebAssembly port (a 32-bit MicroPython:
// 31-bit small ints, like ESP32's). The Python side is cyphy/mp32.py; this is its helper.
//
//   node mp32_driver.mjs <path to micropython.mjs>   < batch.json   > one JSON line per job
//
// batch.json: {"blobs": {id: base64}, "jobs": [{"code": str, "heap": bytes,
//              "pystack": words, "files": {path in the port's filesystem: blob id}}]}
// Every job gets a fresh interpreter (its own heap), its files written into the port's
// in-memory filesystem (/lib is on sys.path), then runs `code` as __main__. Each result
// line: {"stdout", "stderr", "status" (0, SystemExit's code, or 1 for an uncaught
// exception), "heap_initial", "heap_total" (GC arena bytes before and at the end of the
// code, its objects alive: the port grows its heap when an allocation does not fit, and
// gives an added piece back once a collection finds it empty), "heap_used" (gc.mem_alloc()
// right after the code, collected, its globals alive), "ms"}. Lines are written as jobs finish, so a caller
// that times out knows which job hung.
import { readFileSync, writeSync } from "node:fs";
import { pathToFileURL } from "node:url";

const { loadMicroPython } = await import(pathToFileURL(process.argv[2]).href);
const batch = JSON.parse(readFileSync(0, "utf8"));
const blobs = {};
for (const [id, b64] of Object.entries(batch.blobs || {})) blobs[id] = Buffer.from(b64, "base64");

// Runs the job's code from /__snippet__.py. Exceptions are caught in Python, after
// unlocking the heap: an exception reaching the port's JS glue while the heap is still
// locked (micropython.heap_lock()) makes the port spin forever converting it to text.
const WRAPPER = `
def _cyphy_run():
    import gc, micropython, sys
    with open('/__snippet__.py') as f:
        src = f.read()
    g = {'__name__': '__main__'}
    try:
        exec(compile(src, '<snippet>', 'exec'), g)
        rc = 0
    except SystemExit as e:
        while micropython.heap_unlock():
            pass
        c = e.args[0] if e.args else 0
        if c is None:
            rc = 0
        elif isinstance(c, int):
            rc = c
        else:
            print(c, file=sys.stderr)
            rc = 1
    except BaseException as e:
        while micropython.heap_unlock():
            pass
        sys.print_exception(e, sys.stderr)
        rc = 1
    while micropython.heap_unlock():
        pass
    src = None
    import _cyphy_sink
    _cyphy_sink.meta()
    micropython.mem_info()
    _cyphy_sink.out()
    gc.collect()
    return rc, gc.mem_alloc()
_cyphy_rc, _cyphy_used = _cyphy_run()
`;
const MEM = "import micropython\nmicropython.mem_info()\n";

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
  mp.FS.writeFile("/__snippet__.py", job.code);
  // the wrapper reads the heap's size at the end of the code (mem_info) into `meta`
  mp.registerJsModule("_cyphy_sink", { meta: () => { sink = "meta"; }, out: () => { sink = "out"; } });
  const text = (a) => decoder.decode(new Uint8Array(a));
  sink = "meta";
  mp.runPython(MEM);
  const heapInitial = gcTotal(text(sinks.meta));
  sinks.meta = [];
  sink = "out";
  let status = 1;
  let used = -1;
  try {
    mp.runPython(WRAPPER);
    status = mp.globals.get("_cyphy_rc");
    used = mp.globals.get("_cyphy_used");
  } catch (e) {
    // only the wrapper's own failures land here (e.g. no memory left for it)
    sinks.err.push(...Buffer.from(`mp32: ${e.type || e.name}: ${e.message}\n`));
  }
  sink = "meta";
  const heapTotal = gcTotal(text(sinks.meta));
  const line = JSON.stringify({
    stdout: text(sinks.out), stderr: text(sinks.err), status,
    heap_initial: heapInitial, heap_total: heapTotal, heap_used: used,
    ms: performance.now() - t0,
  }) + "\n";
  writeSync(1, line);
}
