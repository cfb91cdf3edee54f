// Classic content script (MV3 content scripts cannot be ES modules). It imports the real entry as
// a module; content/**/*.js and common/*.js are web-accessible to the three sites for this reason.
// The module runs in this isolated world, with chrome.runtime available.
(async () => {
  try {
    const main = await import(chrome.runtime.getURL('content/main.js'));
    main.start();
  } catch (error) {
    console.debug('[parley] content script failed to load', error);
  }
})();
