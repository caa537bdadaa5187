# A user block (docs/user-blocks.md): a PI controller written by the user, run by the node
# in its control pass. inputs: [measurement]; outputs: [output]; params: setpoint, kp, ki,
# min, max (engineering units). Ints in milli-units in tick; Gain for the constants;
# set() changes the setpoint or a gain at run time (cyphy set URL pi.setpoint=70).
from cyphy_node.fixed import Gain


class Block:
    def __init__(self, params, dt):
        # config time: floats and allocation are fine here
        self.sp = int(round(params["setpoint"] * 1000))
        self.kp = Gain(params["kp"])
        self.ki_dt = Gain(params["ki"] * dt)
        self.lo = int(round(params.get("min", 0) * 1000))
        self.hi = int(round(params.get("max", 100) * 1000))
        self.i = 0
        self.dt = dt

    def set(self, name, value):
        # between two control passes: floats and allocation are fine here
        if name == "setpoint":
            self.sp = int(round(value * 1000))
        elif name in ("kp", "ki") and value < 0:
            raise ValueError("a gain must be >= 0")
        elif name == "kp":
            self.kp = Gain(value)
        elif name == "ki":
            self.ki_dt = Gain(value * self.dt)
        else:
            raise ValueError("only setpoint, kp and ki change at run time")

    def tick(self, x, y):
        # the control pass: no allocation, ints within 31 bits
        e = self.sp - x[0]
        i = self.i + self.ki_dt.mul(e)
        i = self.lo if i < self.lo else (self.hi if i > self.hi else i)
        self.i = i
        u = self.kp.mul(e) + i
        y[0] = self.lo if u < self.lo else (self.hi if u > self.hi else u)
