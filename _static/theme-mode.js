// Light/dark mode on a reader's first visit. The theme's inline start-up script copies the
// saved mode from localStorage, or else the theme's default, which is empty here (the book
// theme has no `default_mode` option); the theme then logs "invalid theme mode" as an error
// and falls back to "auto". Start from "auto" (follow the system setting) directly.
(function () {
  "use strict";
  var root = document.documentElement;
  if (!root.dataset.mode) {
    root.dataset.mode = "auto";
  }
})();
