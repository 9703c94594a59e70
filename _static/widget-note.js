// Interactive controls (ipywidgets) only work with a running Python kernel. On the website
// the chapters show a static figure before each set of controls; where the controls would
// be, this script puts a short note with a link that opens the chapter in Colab.
// Jupyter Book adds every .js file in _static/ to every page; pages without widgets are
// left untouched.
(function () {
  "use strict";

  function colabLink() {
    var link = document.querySelector('a[href^="https://colab.research.google.com/"]');
    return link ? link.getAttribute("href") : null;
  }

  function addNotes() {
    var views = document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-view+json"]'
    );
    var href = colabLink();
    views.forEach(function (view) {
      var holder = view.parentElement;
      if (!holder || holder.querySelector(".mtl-widget-note")) {
        return;
      }
      var note = document.createElement("div");
      note.className = "mtl-widget-note";
      note.setAttribute("role", "note");
      note.appendChild(
        document.createTextNode(
          "这里是一组交互控件（滑块和按钮），需要运行中的 Python 内核，网页上无法使用；" +
            "上方的静态图展示了这个实验的结果。想换参数重新计算，请"
        )
      );
      if (href) {
        var a = document.createElement("a");
        a.href = href;
        a.textContent = "在 Colab 中打开本章";
        note.appendChild(a);
        note.appendChild(document.createTextNode("，或在本地 Jupyter 中运行。"));
      } else {
        note.appendChild(document.createTextNode("在 Colab 或本地 Jupyter 中运行本章。"));
      }
      holder.appendChild(note);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", addNotes);
  } else {
    addNotes();
  }
})();
