"""The code the grader defines in the student's kernel before the hidden calls (runs INSIDE the
sandbox, in the student's own kernel): one call per hidden case, the reference guard, and the
exact-type encoding of what the student's function returned.

The reference guard is a profiler hook that fails the case if the library's own version of the
exercise runs while the student's function does (directly, wrapped, partial, copied, reloaded); an
audit hook fails the case if the function switches the profiler off or starts another program.
None of this is trusted: the student can replace all of it from their own cells, and stage 2 never
relies on it having run honestly; it only makes the honest case work. Serves the README's
"Exercises and grading (instructors)" section (*returning or wrapping the library's own version of
an exercise gains nothing; a hook fails the case ...*) and docs/grading.md "How it is built".
Introduced for the graded exercises of the lessons.
"""

# Defined in the student's kernel before the hidden calls; one call per cell after that. It converts
# the return value to plain data using exact type checks (no subclasses, no look-alikes) and writes
# it to a file. The student can replace all of this from their own cells; stage 2 never relies on
# it having run honestly, it only makes the honest case work.
HARNESS = r'''
def __nblib_grading_make__():
    import sys

    # While a student function runs on hidden inputs, these interpreter events mean it switched the
    # reference guard (a profiler hook) off or started another program: the case fails. An audit
    # hook cannot be removed once added; if one of the notebook's own hooks refuses ours, every
    # case fails the same way.
    watched = {"sys.setprofile", "sys.settrace", "subprocess.Popen", "os.exec", "os.posix_spawn",
               "os.spawn", "os.system", "pty.spawn"}
    state = {"active": False, "tampered": False, "broken": False}

    def audit(event, args):
        if state["active"] and event in watched:
            state["tampered"] = True

    try:
        sys.addaudithook(audit)
    except BaseException:
        state["broken"] = True

    def call(index, name, request, result_dir, max_elements):
        return __nblib_grading_call_body__(index, name, request, result_dir, max_elements, state)

    return call


def __nblib_grading_call_body__(index, name, request, result_dir, max_elements, state):
    import json, sys, threading

    def write(payload):
        with open(f"{result_dir}/{index}.json", "w", encoding="utf-8") as fh:
            fh.write(json.dumps(payload, allow_nan=True))

    class Unsupported(Exception):
        pass

    class ReferenceUsed(Exception):
        pass

    count = [0]

    def decode(x):
        if type(x) is list:
            return [decode(v) for v in x]
        if type(x) is dict:
            if "__dict__" in x:
                return {decode(k): decode(v) for k, v in x["__dict__"]}
            if "__tensor__" in x:
                import torch
                spec = x["__tensor__"]
                t = torch.tensor(spec["values"], dtype=getattr(torch, spec["dtype"]))
                return t.reshape(spec["shape"])
        return x

    def encode(x, depth=0):
        count[0] += 1
        if depth > 64 or count[0] > max_elements:
            raise Unsupported("too-large")
        t = type(x)
        if x is None or t is bool or t is int or t is float or t is str:
            return x
        if t is list or t is tuple:
            return [encode(v, depth + 1) for v in x]
        if t is dict:
            return {"__dict__": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
        torch = sys.modules.get("torch")
        if torch is not None and t in (torch.Tensor, torch.nn.Parameter):
            count[0] += x.numel()
            if count[0] > max_elements:
                raise Unsupported("too-large")
            dtype = str(x.dtype).replace("torch.", "")
            return {"__tensor__": {"dtype": dtype, "shape": list(x.shape),
                                   "values": x.detach().cpu().tolist()}}
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(x, numpy.generic) and t.__module__ == "numpy":
            return encode(x.item(), depth + 1)
        raise Unsupported(t.__name__)

    def encode_weights(x):
        # A state dict goes back as plain data (named tensors by value), like any other value.
        torch = sys.modules.get("torch")
        if torch is None:
            raise Unsupported(type(x).__name__)
        if isinstance(x, torch.nn.Module):
            x = x.state_dict()
        if not isinstance(x, dict):
            raise Unsupported(type(x).__name__)
        pairs = []
        for k, v in dict.items(x):
            if type(k) is not str or type(v) not in (torch.Tensor, torch.nn.Parameter):
                raise Unsupported(type(v).__name__)
            pairs.append([k, encode(v.detach(), 1)])
        return {"__weights__": {"__dict__": pairs}}

    # The library's own versions of this exercise: any call of their code while the student's
    # function runs (directly, wrapped, partial, copied, reloaded) fails the case.
    request = json.loads(request)
    files = tuple("/" + "/".join(f.split("/")[-2:]) for f, _, _ in request.get("references", []))
    exact = {q for _, q, kind in request.get("references", []) if kind == "exact"}
    prefixes = tuple(q for _, q, kind in request.get("references", []) if kind == "prefix")
    hit = [False]

    def guard(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code.co_filename.endswith(files) and (
                    code.co_qualname in exact or (prefixes and code.co_qualname.startswith(prefixes))):
                hit[0] = True
                raise ReferenceUsed("the library's version of this exercise")

    value = None
    outcome = None
    try:
        parts = name.split(".")
        if parts[0] not in globals():
            write({"ok": False, "error": "undefined"})
            return
        target = globals()[parts[0]]
        for part in parts[1:]:
            target = getattr(target, part)
        args, kwargs = decode(request["args"]), decode(request["kwargs"])
        if files:
            threading.setprofile(guard)
            sys.setprofile(guard)
        state["tampered"] = False
        state["active"] = True
        try:
            value = target(*args, **kwargs)
        finally:
            state["active"] = False
            sys.setprofile(None)
            threading.setprofile(None)
    except KeyboardInterrupt:
        outcome = {"ok": False, "error": "interrupted"}
    except BaseException as err:
        outcome = {"ok": False, "error": "raised", "exception": type(err).__name__}
    if hit[0]:
        write({"ok": False, "error": "reference"})
        return
    if state["tampered"] or state["broken"]:
        write({"ok": False, "error": "tampered"})
        return
    if outcome is not None:
        write(outcome)
        return
    try:
        if request["returns"] == "weights":
            encoded = encode_weights(value)
        else:
            encoded = encode(value)
    except Unsupported as err:
        write({"ok": False, "error": "unsupported", "type": str(err)})
        return
    except BaseException as err:
        write({"ok": False, "error": "raised", "exception": type(err).__name__})
        return
    write({"ok": True, "value": encoded})


__nblib_grading_call__ = __nblib_grading_make__()
del __nblib_grading_make__
'''
