// Drives the legacy /functions/v1 routes through the real @supabase/supabase-js, as the old system's callers
// did: `supabase.functions.invoke(name, {body})`. Prints one JSON object: what each call gave back.
//
//   node drive.mjs BASE_URL API_KEY SITE_URL COMPLETED_JOB_ID FAILED_BATCH_ID
//
// BASE_URL is the crawljobs API (supabase-js calls BASE_URL/functions/v1/NAME); API_KEY goes where a Supabase
// key goes (the Authorization and apikey headers). SITE_URL serves the pages submitted (loopback only).
import { createClient, FunctionsHttpError } from "@supabase/supabase-js";
import ws from "ws";

const [base, key, site, completedJob, failedBatch] = process.argv.slice(2);
// Node 20 has no WebSocket of its own: supabase-js asks for `ws` as its realtime transport (unused here).
const supabase = createClient(base, key, {
  auth: { persistSession: false, autoRefreshToken: false },
  realtime: { transport: ws },
});
const results = {};

async function call(label, name, options) {
  const { data, error } = await supabase.functions.invoke(name, options);
  if (error) {
    const entry = { error: error.name, httpError: error instanceof FunctionsHttpError };
    if (error instanceof FunctionsHttpError) {
      entry.status = error.context.status;
      entry.body = await error.context.json();
    } else {
      entry.message = String(error.message);
    }
    results[label] = entry;
  } else {
    results[label] = { data };
  }
  return results[label];
}

// The old README's bodies.
const single = await call("submit", "submit-crawl-job", {
  body: { url: `${site}/ok/one`, premium: false, ultraPremium: false, render: false },
});
const jobId = single.data?.jobId;
await call("submitBatch", "submit-crawl-jobs-batch", {
  body: { urls: [`${site}/ok/b1`, `${site}/ok/b2`, "ftp://127.0.0.1/refused"], premium: false,
          ultraPremium: false, render: false, batchId: `compat-${Date.now()}` },
});
// Read routes: GET as documented, and the ways supabase-js callers really invoke them (a POST, its default).
await call("getByGet", `get-crawl-job?jobId=${completedJob}`, { method: "GET" });
await call("getByPostQuery", `get-crawl-job?jobId=${completedJob}`);
await call("getByPostBody", "get-crawl-job", { body: { jobId: completedJob } });
await call("getPending", "get-crawl-job", { body: { jobId } });
await call("batchByGet", `get-crawl-jobs-batch?batchId=${failedBatch}`, { method: "GET" });
await call("batchByPostBody", "get-crawl-jobs-batch", { body: { batchId: failedBatch } });
await call("listByGet", "list-crawl-job-batches?limit=25&offset=0", { method: "GET" });
await call("listByPost", "list-crawl-job-batches", { body: { limit: 25, offset: 0 } });
await call("wait", "wait-for-crawl-job", {
  body: { jobId: completedJob, maxWaitTimeMs: 300000, pollingIntervalMs: 5000 },
});
await call("retry", "retry-failed-batch-jobs", { body: { batchId: failedBatch } });
await call("process", "process-crawl-jobs", { body: { batchSize: 1 } });
// An error, read the supabase-js way.
await call("missing", "get-crawl-job", { body: { jobId: "00000000-0000-0000-0000-000000000000" } });

process.stdout.write(JSON.stringify(results) + "\n");
