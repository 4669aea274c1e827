// The Uppy Dashboard in the page with the Tus plugin; drive.mjs adds a file through the
// Dashboard's own file input, clicks its upload button and waits for window.uppyResult.
const endpoint = new URLSearchParams(location.search).get('endpoint');
const uppy = new Uppy.Uppy({ autoProceed: false })
  .use(Uppy.Dashboard, { inline: true, target: '#dashboard', proudlyDisplayPoweredByUppy: false })
  .use(Uppy.Tus, { endpoint, chunkSize: 2 * 1024 * 1024 });
uppy.on('complete', (result) => {
  window.uppyResult = {
    successful: result.successful.map((f) => ({ name: f.name, url: f.uploadURL })),
    failed: result.failed.map((f) => ({ name: f.name, error: String(f.error) })),
  };
});
