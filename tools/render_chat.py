"""Renders chat conversations with a model's own Jinja chat template for draftalign's C++ stages, through the function
transformers' apply_chat_template calls (render_jinja_template: the same sandboxed jinja2 environment, filters and
globals), so the text is the one transformers renders. Embedded in the draftalign binary and run as a co-process.

Protocol: one JSON object per line on stdin, one answer per line on stdout.
  first line  {"template": "<jinja source>", "variables": {"bos_token": "<s>", ...}}
              answer {"ok": true} once the template compiles, else {"error": "line N: <what jinja says>"}
  then        {"messages": [{"role": "user", "content": "..."}, ...], "add_generation_prompt": true}
              answer {"text": "..."} or {"error": "..."}
"""
import json
import os
import sys

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def answer(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def main():
    try:
        import jinja2
        from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template
    except Exception as e:  # noqa: BLE001 - any import failure is reported to the caller as one line
        answer({"error": f"cannot import transformers' chat template renderer in {sys.executable} ({e}); "
                         f"set DRAFTALIGN_PYTHON to a Python with transformers and jinja2"})
        return
    first = sys.stdin.readline()
    if not first:
        return
    init = json.loads(first)
    template, variables = init["template"], init["variables"]
    try:
        _compile_jinja_template(template)
    except jinja2.TemplateSyntaxError as e:
        answer({"error": f"line {e.lineno}: {e.message}"})
        return
    answer({"ok": True})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            rendered, _ = render_jinja_template(conversations=[request["messages"]], chat_template=template,
                                                add_generation_prompt=request["add_generation_prompt"], **variables)
            answer({"text": rendered[0]})
        except jinja2.TemplateError as e:
            where = f"line {e.lineno}: " if getattr(e, "lineno", None) else ""
            answer({"error": f"{where}{type(e).__name__}: {e.message or e}"})
        except Exception as e:  # noqa: BLE001 - a Python error inside the template (e.g. a bad filter argument)
            answer({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
