() => {
  // LoRA GUI: clicking "Tab › Field" in the list of problems above Start shows that tab, opens the
  // closed section that holds the field, scrolls the field into view and highlights it briefly.
  if (window.__loraGuiJump) return;
  window.__loraGuiJump = true;
  const visible = (el) => !!(el && el.offsetParent !== null && el.getClientRects().length);
  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("#issues-overview a.lg-where");
    if (!link) return;
    const item = link.closest("[data-field]");
    if (!item) return;
    event.preventDefault();
    const field = item.dataset.field, tab = item.dataset.tab;
    const button = document.getElementById(`tab-${tab}-button`);
    if (button) button.click();
    let tries = 0;
    const reveal = () => {
      const target = document.getElementById(`field-${field}`);
      if (!visible(target)) {
        // a closed accordion around the field: open it (its header is the first .label-wrap)
        const section = target && target.closest("[id^=section-]");
        const header = section && section.querySelector(".label-wrap");
        if (header && tries === 0) header.click();
        if (tries++ < 20) { setTimeout(reveal, 100); }
        return;
      }
      target.scrollIntoView({ behavior: "smooth", block: "center" });
      const cell = target.closest(".lg-cell") || target;
      cell.classList.add("lg-flash");
      setTimeout(() => cell.classList.remove("lg-flash"), 1600);
      const input = target.querySelector("input, textarea");
      if (input) input.focus({ preventScroll: true });
    };
    setTimeout(reveal, 60);
  });
  // The open tab, as <body data-lg-tab="...">: the style sheet hides the training's Start, Print and
  // problem list on the Slider tab, which has its own Start (one Start button per tab).
  const markTab = () => {
    const selected = document.querySelector("#main-tabs [role=tab][aria-selected=true]");
    const match = selected && selected.id.match(/^tab-(.+)-button$/);
    if (match && document.body.dataset.lgTab !== match[1]) document.body.dataset.lgTab = match[1];
  };
  new MutationObserver(markTab).observe(document.body, { subtree: true, attributes: true,
                                                          attributeFilter: ["aria-selected"] });
  markTab();
  // The folded problem list stays open (or closed) as the user left it when the checks redraw it.
  document.addEventListener("toggle", (event) => {
    if (event.target.matches && event.target.matches("#issues-overview details.lg-problems")) {
      window.__loraGuiProblemsOpen = event.target.open;
    }
  }, true);
  const keepOpen = () => {
    const details = document.querySelector("#issues-overview details.lg-problems");
    if (details && window.__loraGuiProblemsOpen && !details.open) details.open = true;
  };
  new MutationObserver(keepOpen).observe(document.body, { subtree: true, childList: true });
}
