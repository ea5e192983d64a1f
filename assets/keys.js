// Keyboard labeling for the focus view. Installed once per browser tab; looks the buttons up at each
// key press (by their Streamlit key classes), so it never holds on to elements a rerun replaced.
// Streamlit's own button shortcuts dropped some presses made while a rerun was drawing.
(function () {
  const win = window.parent && window.parent.document ? window.parent : window;
  if (win.__proxyLabelerKeys) return;
  win.__proxyLabelerKeys = true;
  const doc = win.document;
  const actions = { s: "skip", u: "undo", backspace: "undo", arrowleft: "prev", arrowright: "next" };
  const digits = "1234567890";
  const editable = (el) => el && (/^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName) || el.isContentEditable);
  // A rerun may be redrawing the buttons at the moment of the press: retry for up to a second.
  const press = (target, tries) => {
    const button = doc.querySelector(".st-key-" + target + " button");
    if (button && !button.disabled) button.click();
    else if (tries > 0) setTimeout(() => press(target, tries - 1), 50);
  };
  doc.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || editable(event.target)) return;
    if (!doc.querySelector(".st-key-focus-info")) return;   // not in the focus view: keys keep their usual meaning
    const key = event.key.toLowerCase();
    const target = key.length === 1 && digits.includes(key) ? "class-" + digits.indexOf(key) : actions[key];
    if (!target) return;
    event.preventDefault();
    event.stopPropagation();
    press(target, 20);
  }, true);
})();
