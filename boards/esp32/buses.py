# The ESP32 board's buses and counters for device channels (onewire, uart, i2c, spi,
# counter, encoder: the HAL's methods, boards/hal.py), loaded only when a node's config has
# a device channel (firmware/lib/cyphy_node/devices.py), so that a node without one pays
# no RAM for them. Each function takes the Board first. MicroPython facts each relies on
# are cited where they are used ([MP-PCNT]: boards/esp32/pins.py).
import machine

from boards import hal


class IrqCounter:
    """The fallback pulse counter without a PCNT unit: a soft Pin IRQ per edge (MicroPython
    schedules each handler call, so edges closer together than the scheduler's latency,
    a few hundred us to ms on ESP32, are lost: up to a few hundred Hz). With a direction
    pin: quadrature x1 (A rising: down when B is high). value() as machine.Counter's."""

    def __init__(self, pin, edge, direction):
        self.n = 0
        self._dir = direction
        self._cb = self._edge_dir if direction is not None else self._edge
        pin.irq(self._cb, machine.Pin.IRQ_RISING if edge == "rising" else machine.Pin.IRQ_FALLING)

    def _edge(self, _p):
        self.n += 1

    def _edge_dir(self, _p):
        self.n += -1 if self._dir.value() else 1

    def value(self, v=None):
        # called from the control pass, itself a soft callback: the IRQ handlers, scheduled
        # too, never run inside it, so this get-and-set is atomic there
        n = self.n
        if v is not None:
            self.n = v
        return n


def onewire(board, pin):
    # MicroPython's onewire module (micropython-lib's driver over the port's _onewire
    # C functions, frozen into the ESP32 firmware): OneWire(Pin) sets the pin to
    # open drain with the internal pull-up (too weak for the bus: fit 4.7 kohm)
    board.check_pin(pin, hal.DOUT)
    import onewire

    return onewire.OneWire(machine.Pin(pin))


def uart(board, id, tx, rx, baud=9600, parity="none", stop=1):
    # ESP32's UART 1 and 2 (the C3 has only 1; 0 is the REPL's) take any pins through
    # the GPIO matrix. MicroPython (ports/esp32/machine_uart.c): parity None, 0 (even)
    # or 1 (odd); timeout=0: read/readinto return what the driver's ring buffer holds
    # (None if nothing), never waiting; write() copies into the TX ring buffer (txbuf
    # 256) and returns; rxbuf 256 bytes, the IDF's minimum
    board.check_pin(tx, hal.DOUT)
    board.check_pin(rx, hal.DIN)
    if parity not in ("none", "even", "odd"):
        raise ValueError('parity must be "none", "even" or "odd", not %r' % (parity,))
    return machine.UART(id, baudrate=baud, bits=8,
                        parity=None if parity == "none" else (0 if parity == "even" else 1),
                        stop=stop, tx=tx, rx=rx, txbuf=256, rxbuf=256, timeout=0,
                        timeout_char=0)


def i2c(board, id, sda, scl, freq=100000):
    # ESP32's hardware I2C controllers 0 and 1 take any output-capable pins (GPIO
    # matrix); a NACK raises OSError (machine_i2c.c: ENODEV, ETIMEDOUT on a timeout)
    board.check_pin(sda, hal.DOUT)
    board.check_pin(scl, hal.DOUT)
    return machine.I2C(id, sda=machine.Pin(sda), scl=machine.Pin(scl), freq=freq)


def spi(board, id, sck, miso, baudrate=1000000, mosi=None):
    # hardware SPI 1 or 2 (HSPI, VSPI on ESP32) through the GPIO matrix, mode 0
    board.check_pin(sck, hal.DOUT)
    board.check_pin(miso, hal.DIN)
    kw = {"sck": machine.Pin(sck), "miso": machine.Pin(miso)}
    if mosi is not None:
        board.check_pin(mosi, hal.DOUT)
        kw["mosi"] = machine.Pin(mosi)
    return machine.SPI(id, baudrate=baudrate, polarity=0, phase=0, **kw)


def counter(board, unit, pin, edge="rising", filter_ns=0):
    # [MP-PCNT] machine.Counter(id, src, edge=, filter_ns=) on a PCNT unit; a chip
    # without PCNT (ESP32-C3) or a unit beyond the chip's: Pin IRQs (IrqCounter)
    board.check_pin(pin, hal.DIN)
    if unit < board._d.get("pcnt_units", 0) and hasattr(machine, "Counter"):
        C = machine.Counter
        return C(unit, machine.Pin(pin, machine.Pin.IN),
                 edge=C.RISING if edge == "rising" else C.FALLING, filter_ns=filter_ns)
    return IrqCounter(machine.Pin(pin, machine.Pin.IN), edge, None)


def encoder(board, unit, pin_a, pin_b, phases=4, filter_ns=0):
    board.check_pin(pin_a, hal.DIN)
    board.check_pin(pin_b, hal.DIN)
    if unit < board._d.get("pcnt_units", 0) and hasattr(machine, "Encoder"):
        return machine.Encoder(unit, machine.Pin(pin_a, machine.Pin.IN),
                               machine.Pin(pin_b, machine.Pin.IN), phases=phases,
                               filter_ns=filter_ns)
    # x1 only: a count per rising edge of A, up when B is low (A leads)
    return IrqCounter(machine.Pin(pin_a, machine.Pin.IN), "rising",
                      machine.Pin(pin_b, machine.Pin.IN))
