// Uploads the picked file with tus-js-client as an app would, reporting to drive.mjs through
// window.report (exposed by Playwright). Options come from the test; `abortAt` aborts once
// that fraction is sent and resumes from the stored upload URL, as after a page reload.

function pickedFile() {
  const file = document.getElementById('file').files[0];
  if (!file) throw new Error('no file picked');
  return file;
}

function startUpload(file, options, hooks) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(file, {
      endpoint: options.endpoint,
      chunkSize: options.chunkSize ?? Infinity,
      parallelUploads: options.parallelUploads ?? 1,
      retryDelays: options.retryDelays ?? [0, 1000, 3000, 5000],
      removeFingerprintOnSuccess: false,
      metadata: { filename: file.name, filetype: file.type || 'application/octet-stream' },
      onBeforeRequest(req) {
        if (options.withCredentials) req.getUnderlyingObject().withCredentials = true;
      },
      onAfterResponse(req, res) {
        if (req.getMethod() === 'HEAD') {
          window.report({ event: 'head', status: res.getStatus(), offset: Number(res.getHeader('Upload-Offset')) });
        }
      },
      onProgress(sent, total) {
        hooks.progress?.(upload, sent, total);
      },
      onError(error) {
        reject(error);
      },
      onSuccess() {
        resolve(upload);
      },
    });
    hooks.created?.(upload);
    upload.findPreviousUploads().then((previous) => {
      if (hooks.resume && previous.length > 0) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });
  });
}

window.runUpload = async function runUpload(options) {
  const file = pickedFile();
  let maxSent = 0;
  let reportedUrl = null;
  const progress = (upload, sent, total) => {
    maxSent = Math.max(maxSent, sent);
    if (upload.url && upload.url !== reportedUrl) {
      reportedUrl = upload.url;
      window.report({ event: 'url', url: upload.url });
    }
    window.report({ event: 'progress', sent, total });
  };
  try {
    if (options.abortAt !== undefined) {
      let firstUrl = null;
      await new Promise((resolve, reject) => {
        startUpload(file, options, {
          progress(upload, sent, total) {
            progress(upload, sent, total);
            if (sent >= total * options.abortAt && firstUrl === null) {
              firstUrl = upload.url;
              upload.abort().then(resolve, reject);
            }
          },
        }).then(() => reject(new Error('finished before the abort')), reject);
      });
      window.report({ event: 'aborted', url: firstUrl, sent: maxSent });
    }
    const upload = await startUpload(file, options, { progress, resume: options.abortAt !== undefined });
    return { ok: true, url: upload.url, maxSent };
  } catch (error) {
    return { ok: false, error: String(error), status: error.originalResponse?.getStatus?.() ?? null };
  }
};
