// Split a search query into the words of the search index, for Chinese.
//
// The index is built with jieba, which segments Chinese text into words ("多任务", "学习"),
// but the browser gets the query unsegmented: "多任务学习的负迁移" would be looked up as one
// word and found nowhere. Sphinx's searchtools.js uses a global splitQuery() when one is
// defined before it loads (Jupyter Book loads the scripts in _static/ first). This one splits
// like Sphinx's default (on anything that is not a letter, digit or "_"); a run of Chinese
// characters that is not itself an index word is then cut into index words by forward
// maximum matching against the loaded index. Characters that start no index word are
// dropped (single characters are never indexed). Latin words pass through unchanged.
(function () {
  "use strict";

  var HAN = /\p{Script=Han}/u;
  var SEPARATORS = /[^\p{Letter}\p{Number}_\p{Emoji_Presentation}]+/gu;
  var LONGEST = 12; // longest index word tried, in characters

  function isIndexWord(index, word) {
    var has = Object.prototype.hasOwnProperty;
    return (index.terms && has.call(index.terms, word)) ||
      (index.titleterms && has.call(index.titleterms, word));
  }

  function segment(index, run) {
    var words = [];
    var i = 0;
    while (i < run.length) {
      var found = null;
      for (var j = Math.min(run.length, i + LONGEST); j > i + 1; j--) {
        var candidate = run.slice(i, j);
        if (isIndexWord(index, candidate.toLowerCase())) {
          found = candidate;
          break;
        }
      }
      if (found) {
        words.push(found);
        i += found.length;
      } else {
        i += 1;
      }
    }
    return words.length ? words : [run];
  }

  window.splitQuery = function (query) {
    // searchtools.js declares `const Search`: a global binding, but not a window property.
    var index = typeof Search !== "undefined" && Search ? Search._index : null;
    var out = [];
    query.split(SEPARATORS).forEach(function (word) {
      if (!word) {
        return;
      }
      if (!index || !HAN.test(word) || isIndexWord(index, word.toLowerCase())) {
        out.push(word);
      } else {
        Array.prototype.push.apply(out, segment(index, word));
      }
    });
    return out;
  };
})();
