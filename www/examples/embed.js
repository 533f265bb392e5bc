// The example host page's script: logs the widgets' events (a site would react to them).
const log = document.getElementById('log');
for (const el of document.querySelectorAll('good-drag')) {
  for (const type of ['ready', 'result', 'error']) {
    el.addEventListener(type, (e) => {
      const d = type === 'result' ? { width: e.detail.width, height: e.detail.height, finalHandles: e.detail.finalHandles } : e.detail;
      log.textContent += `${el.id} ${type} ${JSON.stringify(d)}\n`;
    });
  }
}
